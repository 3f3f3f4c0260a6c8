"""Simple cuts in numpy: comparisons of a column with a number, joined by ``& | ~``.

numexpr runs in one thread per child (one child per client) and works in blocks:
``(e > 5) & (e < 20)`` over 2 M doubles takes it ~25 ms, numpy ~1 ms. For the
shapes below numpy gives the same result bit for bit, so they skip numexpr:

- ``column OP number`` and ``number OP column``, OP one of ``== != < <= > >=``;
- ``column % k OP number`` for an integer column and a non-zero integer ``k``;
- ``a & b``, ``a | b``, ``~a`` of those.

Numbers become ``numpy.int64`` or ``numpy.float64`` scalars, so a comparison runs
in the type numexpr casts to (int64 for integers, double once a float is in it).
Anything else (other arithmetic, float remainders, functions, column against column)
stays with numexpr.
The text is the one ``selection`` generated and checked; it is parsed, never run.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Mapping

import numpy as np

Plan = Callable[[Mapping[str, np.ndarray]], "np.ndarray | None"]

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}
_FLIP = {ast.Eq: ast.Eq, ast.NotEq: ast.NotEq, ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE}
_INT64 = (-(2**63), 2**63 - 1)


class _NotSimple(Exception):
    pass


def _number(node: ast.expr) -> np.int64 | np.float64:
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        sign, node = -1, node.operand
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool) or not isinstance(node.value, int | float):
        raise _NotSimple
    value = sign * node.value
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise _NotSimple
        return np.int64(value)
    return np.float64(value)


def _build(node: ast.expr) -> Plan:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd | ast.BitOr):
        left, right = _build(node.left), _build(node.right)
        op = operator.and_ if isinstance(node.op, ast.BitAnd) else operator.or_

        def both(cols):
            a = left(cols)
            b = right(cols) if a is not None else None
            return None if b is None else op(a, b)

        return both
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
        inner = _build(node.operand)

        def invert(cols):
            a = inner(cols)
            return None if a is None else ~a

        return invert
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        kind, lhs, rhs = type(node.ops[0]), node.left, node.comparators[0]
        if isinstance(rhs, ast.Name | ast.BinOp):
            kind, lhs, rhs = _FLIP[kind], rhs, lhs
        divisor = None
        if isinstance(lhs, ast.BinOp) and isinstance(lhs.op, ast.Mod):
            # integer column % integer: numexpr and numpy agree (the divisor's sign); 0 is left to numexpr
            divisor = _number(lhs.right)
            if not isinstance(divisor, np.int64) or divisor == 0:
                raise _NotSimple
            lhs = lhs.left
        if not isinstance(lhs, ast.Name):
            raise _NotSimple
        name, number, compare = lhs.id, _number(rhs), _COMPARE[kind]
        kinds = "iuf" if divisor is None else "iu"

        def comparison(cols):
            column = cols.get(name)
            if not isinstance(column, np.ndarray) or column.ndim != 1 or column.dtype.kind not in kinds:
                return None
            return compare(column if divisor is None else column % divisor, number)

        return comparison
    raise _NotSimple


@functools.lru_cache(maxsize=256)
def plan(expression: str) -> Plan | None:
    """The numpy evaluation of ``expression`` (selection's generated text), or None when it is not simple.

    The plan itself returns None for columns it cannot take (not 1-d numbers): numexpr then does it.
    """
    try:
        tree = ast.parse(expression, mode="eval")
        return _build(tree.body)
    except (_NotSimple, SyntaxError, RecursionError):
        return None
