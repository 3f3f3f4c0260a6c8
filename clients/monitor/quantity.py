"""A histogram's quantity: a branch, or an expression over the branches of one stream.

The language is the arithmetic part of the selection language
(``dispatcher.selection``): branch names, numbers, ``+ - * / % **``, unary ``-``,
the functions ``abs sqrt exp log log10 sin cos tan arctan2 where``, the
reductions ``len sum min max mean any all`` of a list branch, indexing a list by
a constant (``adc[0]``), and comparisons and ``and or not`` (also ``&& || !``)
inside ``where``. Unlike a selection, arithmetic on a list branch works element
by element (``adc / 100`` is a list per record), so a list quantity fills one
entry per element, as ``clients.job.Histogram`` does.

The text is parsed with ``ast.parse`` and walked against a whitelist; nothing is
executed. Values are computed with numpy ufuncs on awkward Arrays.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from dispatcher.suggest import did_you_mean

__all__ = ["Quantity", "QuantityError", "parse_quantity"]

MAX_LENGTH = 1024

_FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "abs": (1, np.abs), "sqrt": (1, np.sqrt), "exp": (1, np.exp), "log": (1, np.log),
    "log10": (1, np.log10), "sin": (1, np.sin), "cos": (1, np.cos), "tan": (1, np.tan),
    "arctan2": (2, np.arctan2), "where": (3, ak.where),
}
_REDUCTIONS = ("len", "sum", "min", "max", "mean", "any", "all")
_BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide,
           ast.Mod: np.mod, ast.Pow: np.power}
_COMPARE = {ast.Eq: np.equal, ast.NotEq: np.not_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
            ast.Gt: np.greater, ast.GtE: np.greater_equal}


class QuantityError(ValueError):
    """A quantity could not be parsed or computed; ``str(err)`` says what and where."""


@dataclass(frozen=True)
class Quantity:
    """A parsed quantity.

    Args:
        text (str): as written in the config.
        branches (frozenset[str]): the branches it reads.
    """

    text: str
    branches: frozenset[str]
    tree: ast.Expression

    def values(self, arrays: ak.Array, stream: str = "") -> ak.Array:
        """The quantity per record (a list per record when it is a list quantity).

        Args:
            arrays (awkward.Array): records of one stream, with at least ``self.branches`` as fields.
            stream (str): the stream, for messages; default ``""``.

        Raises:
            QuantityError: a branch is missing, or an operation does not apply to it.
        """
        fields = set(arrays.fields)
        for name in sorted(self.branches):
            if name not in fields:
                where = f"stream {stream}" if stream else "the records"
                raise QuantityError(f"unknown branch {name!r} in quantity {self.text!r}; "
                                    + did_you_mean(name, fields, kind="branches", where=where))
        try:
            with np.errstate(all="ignore"):
                result = _Evaluator(arrays).visit(self.tree.body)
        except QuantityError:
            raise
        except (TypeError, ValueError) as exc:
            raise QuantityError(f"quantity {self.text!r} cannot be computed for stream {stream}: {exc}") from None
        if not isinstance(result, ak.Array):
            result = ak.Array(np.full(len(arrays), result, dtype=np.float64))
        return result


def parse_quantity(text: str) -> Quantity:
    """Parse and check a quantity.

    Args:
        text (str): e.g. ``"nhits"``, ``"sum(adc) / 1000"``, ``"where(trigsrc == 1, nhits, -1)"``.

    Raises:
        QuantityError: outside the language, saying what would be right.
    """
    if not isinstance(text, str) or not text.strip():
        raise QuantityError(f"a quantity must be a branch name or an expression, not {text!r}")
    if len(text) > MAX_LENGTH:
        raise QuantityError(f"quantity is too long: {len(text)} characters (at most {MAX_LENGTH})")
    python = _python_spelling(text)
    try:
        tree = ast.parse(python.strip(), mode="eval")
        python = python.strip()
    except SyntaxError as exc:
        raise QuantityError(f"quantity {text!r} is not an expression: {exc.msg} at column {exc.offset}") from None
    branches: set[str] = set()
    _check(tree.body, text, branches, depth=0, source=python)
    return Quantity(text=text, branches=frozenset(branches), tree=tree)


def _python_spelling(text: str) -> str:
    """C's ``&& ||`` as ``and or``, and ``!`` as ``~`` (logical not, binding like C's ``!``, as in the
    selection language: ``!a + 1`` is ``(!a) + 1``); token by token, so ``!=`` and strings stay."""
    out: list[str] = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text.strip()).readline))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise QuantityError(f"quantity {text!r} cannot be read: {exc}") from None
    previous = None
    for tok in tokens:
        doubled = (tok.type == tokenize.OP and tok.string in ("&", "|") and previous is not None
                   and previous.string == tok.string and previous.end == tok.start)
        if doubled:  # '&&' and '||' come as two adjacent tokens
            out[-1] = "and" if tok.string == "&" else "or"
            previous = None
            continue
        out.append("~" if tok.string == "!" else tok.string if tok.type != tokenize.NEWLINE else "")
        previous = tok
    return " ".join(out)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def _check(node: ast.AST, text: str, branches: set[str], depth: int, source: str) -> None:
    if depth > 64:
        raise QuantityError(f"quantity {text!r} is nested too deeply")
    allowed = "branches, numbers, + - * / % **, comparisons and and/or/not inside where(), " \
              f"functions {', '.join(_FUNCTIONS)}, reductions {', '.join(_REDUCTIONS)}, indexing by a constant"
    nxt = depth + 1
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return
    name = _dotted(node)
    if name is not None:
        if name in _FUNCTIONS or name in _REDUCTIONS:
            raise QuantityError(f"{name!r} in quantity {text!r} is a function: call it, e.g. {name}(x)")
        branches.add(name)
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, text, branches, nxt, source)
        _check(node.right, text, branches, nxt, source)
        return
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not, ast.Invert)):
        _check(node.operand, text, branches, nxt, source)
        return
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        for part in [node.left, *node.comparators]:
            _check(part, text, branches, nxt, source)
        return
    if isinstance(node, ast.BoolOp):
        for part in node.values:
            _check(part, text, branches, nxt, source)
        return
    if isinstance(node, ast.Subscript):
        index = node.slice
        if _dotted(node.value) is None or not (isinstance(index, ast.Constant) and type(index.value) is int
                                               and index.value >= 0):
            raise QuantityError(f"quantity {text!r}: only a branch indexed by a constant, like adc[0], is allowed")
        _check(node.value, text, branches, nxt, source)
        return
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        func = node.func.id
        if func in _REDUCTIONS:
            if len(node.args) != 1 or _dotted(node.args[0]) is None:
                raise QuantityError(f"quantity {text!r}: {func}() takes one list branch, like {func}(adc)")
            _check(node.args[0], text, branches, nxt, source)
            return
        if func in _FUNCTIONS:
            arity = _FUNCTIONS[func][0]
            if len(node.args) != arity:
                raise QuantityError(f"quantity {text!r}: {func}() takes {arity} argument(s), not {len(node.args)}")
            for arg in node.args:
                _check(arg, text, branches, nxt, source)
            return
        raise QuantityError(f"unknown function {func!r} in quantity {text!r}; "
                            + did_you_mean(func, [*_FUNCTIONS, *_REDUCTIONS], kind="functions"))
    shown = ast.get_source_segment(source, node) or type(node).__name__
    raise QuantityError(f"{shown!r} is not allowed in quantity {text!r} (allowed: {allowed})")


class _Evaluator:
    def __init__(self, arrays: ak.Array):
        self.arrays = arrays

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return float(node.value)  # type: ignore[arg-type]  # _check let only numbers through
        name = _dotted(node)
        if name is not None:
            return self.branch(name)
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self.visit(node.left), self.visit(node.right))
        if isinstance(node, ast.UnaryOp):
            value = self.visit(node.operand)
            if isinstance(node.op, ast.USub):
                return np.negative(value)
            if isinstance(node.op, (ast.Not, ast.Invert)):  # '~' and C's '!' are logical, as in selections
                return np.logical_not(value)
            return value
        if isinstance(node, ast.Compare):
            result = None
            left = self.visit(node.left)
            for op, comparator in zip(node.ops, node.comparators):
                right = self.visit(comparator)
                step = _COMPARE[type(op)](left, right)
                result = step if result is None else np.logical_and(result, step)
                left = right
            return result
        if isinstance(node, ast.BoolOp):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            values = [self.visit(v) for v in node.values]
            result = values[0]
            for value in values[1:]:
                result = combine(result, value)
            return result
        if isinstance(node, ast.Subscript):
            values = self.branch(_dotted(node.value) or "")
            index = node.slice.value  # type: ignore[attr-defined]
            padded = ak.pad_none(values, index + 1, axis=1)[:, index]
            return ak.fill_none(padded, np.nan)
        if isinstance(node, ast.Call):
            func = node.func.id  # type: ignore[attr-defined]
            args = [self.visit(a) for a in node.args]
            if func in _REDUCTIONS:
                return _reduce(func, args[0])
            return _FUNCTIONS[func][1](*args)
        raise QuantityError(f"cannot compute {type(node).__name__}")  # _check let nothing else through

    def branch(self, name: str) -> ak.Array:
        values = self.arrays[name]
        if ak.Array(values).layout.is_unknown:
            return values
        kind = str(ak.type(values).content)
        if "string" in kind:
            raise QuantityError(f"branch {name!r} holds strings, which cannot be histogrammed")
        return values


def _reduce(func: str, values: ak.Array) -> ak.Array:
    if values.ndim < 2:
        raise QuantityError(f"{func}() needs a list branch, and this one holds one number per record")
    if func == "len":
        return ak.num(values, axis=1)
    reduced = getattr(ak, func)(values, axis=1)
    return ak.fill_none(reduced, np.nan) if func in ("min", "max", "mean") else reduced
