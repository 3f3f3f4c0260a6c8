"""Parse, check and compile a record selection (a cut) for one stream.

Language: numbers, ``True``/``False``, the stream's flat branches, ``+ - * / % **``,
comparisons (``0 < x < 5`` means ``0 < x and x < 5``), ``FUNCTIONS`` with positional
arguments, and ``REDUCTIONS`` of one jagged branch (``len(hits) > 2``). Logical
operators come as Python ``and or not``, C/ROOT ``&& || !`` and numexpr ``& | ~``,
each with its own language's precedence, all logical (never bitwise); a number
used as a condition is true when nonzero (NaN is nonzero, as in ROOT).

- ``&&``/``||`` bind like ``and``/``or``: ``evt % 7 == 0 && kind != 2`` is
  ``(evt % 7 == 0) and (kind != 2)``. ``&``/``|`` bind tighter than comparisons,
  so ``a == 1 & b == 2`` would read ``a == (1 & b) == 2``: an unparenthesised
  ``&``/``|`` inside a comparison is refused, naming both fixes, and so is a
  number literal next to ``& | ~`` (``flags & 4`` looks like a bit test).
- ``!`` binds as in C, like unary minus: ``!a && b`` is ``(!a) and b``, ``!a + 1``
  is ``(!a) + 1``. Where C and Python readers disagree it is refused with both
  readings: ``!a == b`` (and ``~a == b``) and ``!a ** 2``.
- Arithmetic is numpy's: ``/`` is true division on ints too (``7 / 2 == 3.5``);
  ``%`` takes the divisor's sign (``-7 % 3 == 2``), ``n % 0 == 0`` for ints; on
  floats it is numexpr's ``x - floor(x / y) * y`` (``1 % 0.1 == 0``, ``x % inf``
  is nan) where numpy gives the exact remainder;
  ``**`` is float64 (``2 ** -1 == 0.5``); int ``+ - *`` and unary ``-`` wrap on
  overflow, and ``n % -1 == 0`` also for the smallest int (which the C ``%`` traps on);
  int ``%`` is numexpr's ``((a % b) + b) % b``, whose sum wraps when ``a`` and ``b``
  are both near an end of the int range (numpy would not).
  Nothing raises: ``x / 0`` is inf or nan, and comparisons with nan are false except ``!=``.
- Branches of other kinds (see ``dispatcher.streams``): a fixed-size array
  (``float[3]``) takes the reductions like a variable-length list; either takes
  indexing by a constant, ``pt[0] > 20`` (a list too short gives NaN, so the
  comparison fails); a string branch compares with ``==``/``!=`` to a quoted
  string (``name == "muon"``, nothing else with strings); a member of a split
  object is named by its dotted name as uproot names it (``evt.Beg``). Branches
  holding objects or nested lists cannot be used, and say so.
- Empty lists: ``len``, ``sum`` give 0, ``any`` False, ``all`` True, and ``min``,
  ``max``, ``mean`` (computed in float64) NaN, so comparisons with them fail.

Safety: the text is never executed. The length is bounded first; the stdlib
tokenizer splits it and C operators are mapped token by token; ``ast.parse``
only parses; a depth-bounded whitelist walk of the tree writes a new numexpr
expression in which branches are synthetic names (``_b0``, ``_r1``: no clash
with numexpr's functions). numexpr compiles that text, at compile time already
for the usual types, and sees only the columns (``local_dict``; ``global_dict={}``).
"""

from __future__ import annotations

import ast
import bisect
import io
import math
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import awkward as ak
import numexpr
import numpy as np

from .fastcut import plan
from .suggest import did_you_mean

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "REDUCTIONS",
    "Selection",
    "SelectionError",
    "compile_selection",
]

MAX_LENGTH = 4096
MAX_DEPTH = 64

FUNCTIONS = frozenset({"abs", "sqrt", "exp", "log", "log10", "sin", "cos", "tan", "arctan2", "where"})
REDUCTIONS = frozenset({"len", "sum", "min", "max", "mean", "any", "all"})
#: what a branch holds (``dispatcher.streams``): one number, a variable-length or fixed-size
#: list of numbers, a string, or anything else (objects, nested lists), which is not selectable
BRANCH_KINDS = ("flat", "jagged", "fixed", "string", "other")
_LISTS = ("jagged", "fixed")

_ARITY = {"where": 3, "arctan2": 2}
_INT64_MAX = 2**63 - 1
_LISTED_BRANCHES = 20

_BOOL = "bool"
_NUM = "num"


class SelectionError(ValueError):
    """A selection was rejected; ``str(err)`` is the message for the user.

    Attributes:
        column (int | None): 1-based column of the offending place, when known.
    """

    def __init__(self, message: str, column: int | None = None):
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class _Input:
    local: str  # synthetic numexpr name
    branch: str
    reduction: str | None  # None for a flat branch; a reduction, "[k]" (indexing) or "==" (string equality)
    literal: str | None = None  # the string compared with, for "=="


@dataclass(frozen=True)
class Selection:
    """A checked, compiled selection for one stream.

    Args:
        text (str): the client's original text.
        stream (str): the stream (tree) it applies to.
        branches (frozenset[str]): the branches the expression reads.
    """

    text: str
    stream: str
    branches: frozenset[str]
    _expression: str = field(default="True", repr=False)
    _inputs: tuple[_Input, ...] = field(default=(), repr=False)
    _constants: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False, hash=False)

    def evaluate(self, arrays: Mapping) -> np.ndarray:
        """Which records pass.

        Args:
            arrays (Mapping[str, numpy.ndarray | awkward.Array]): at least
                ``self.branches``, all of one length n; jagged branches as
                awkward Arrays of lists. When the selection reads no branch,
                n is the length of any array given (0 if none is).

        Returns:
            numpy.ndarray: bool, length n.
        """
        columns: dict[str, np.ndarray] = dict(self._constants)
        length: int | None = None
        for item in self._inputs:
            try:
                value = arrays[item.branch]
            except KeyError:
                raise KeyError(
                    f"selection for stream {self.stream} needs branch {item.branch!r}"
                ) from None
            if item.reduction is None:
                column = _flat_column(item.branch, value)
            elif item.reduction == "==":
                column = _string_column(item.branch, value, item.literal or "")
            elif item.reduction.startswith("["):
                column = _element_column(item.branch, value, int(item.reduction[1:-1]))
            else:
                column = _reduced_column(item.reduction, item.branch, value)
            if length is None:
                length = len(column)
            elif len(column) != length:
                raise ValueError(
                    f"branch {item.branch!r} has {len(column)} entries, expected {length}"
                )
            columns[item.local] = column
        if length is None:
            length = len(next(iter(arrays.values()))) if arrays else 0

        fast = plan(self._expression)
        quick = fast(columns) if fast is not None else None
        result = np.asarray(_run(self._expression, columns) if quick is None else quick, dtype=bool)
        if result.ndim == 0:  # nothing in the expression varies per record
            result = np.full(length, bool(result))
        return result


def compile_selection(
    text: str, stream: str, branch_kinds: Mapping[str, str], unserved: Mapping[str, str] | None = None
) -> Selection:
    """Parse, check and compile a selection.

    Args:
        text (str): the selection as the client wrote it.
        stream (str): the stream it applies to (used in messages).
        branch_kinds (Mapping[str, str]): every branch of that stream, mapped
            to its kind (``BRANCH_KINDS``).
        unserved (Mapping[str, str] | None): branches the stream has but cannot serve, with why
            (named as such when a selection uses one); default None.

    Returns:
        Selection: ready to evaluate.

    Raises:
        SelectionError: for anything outside the language, with the place.
    """
    if not isinstance(text, str):
        raise SelectionError(f"selection for stream {stream} must be a string, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise SelectionError(
            f"selection for stream {stream} is too long: {len(text)} characters (at most {MAX_LENGTH})"
        )
    for kind in branch_kinds.values():
        if kind not in BRANCH_KINDS:
            raise ValueError(f"branch kind must be one of {BRANCH_KINDS}, not {kind!r}")

    # Columns are reported in the text as it would be displayed: one kind of newline.
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    source = _Source.tokenize(normalised)
    tree = source.parse()
    source.check_depth(tree)
    compiler = _Compiler(source, stream, branch_kinds, unserved or {})
    expression = compiler.compile(tree)
    inputs = tuple(compiler.inputs)
    constants = compiler.constants

    # Run it on empty columns of the usual types: numexpr compiles and caches
    # the program, so a problem shows now, at subscribe time, not on the first chunk.
    for flat_type in (np.float64, np.int64):
        columns: dict[str, np.ndarray] = {
            item.local: np.empty(0, _typical_type(item, flat_type)) for item in inputs
        }
        _run(expression, {**constants, **columns})
    return Selection(
        text=text,
        stream=stream,
        branches=frozenset(item.branch for item in inputs),
        _expression=expression,
        _inputs=inputs,
        _constants=constants,
    )


# ---------------------------------------------------------------- tokens and parse


@dataclass
class _Token:
    python: str  # what ast.parse sees
    start: int  # offsets in the selection text
    end: int
    new_start: int = 0  # offset in the rebuilt Python text


class _Source:
    """The selection text, its tokens, and the Python text rebuilt from them."""

    def __init__(self, text: str):
        self.text = text
        self.tokens: list[_Token] = []
        self.c_nots: set[int] = set()  # new_start of the '~' tokens that were C '!'
        self.partner: dict[int, int] = {}  # token index of '(' -> index of its ')'
        self.python = ""
        self._new_starts: list[int] = []
        self._index_by_start: dict[int, int] = {}
        self._index_by_end: dict[int, int] = {}

    # -- errors

    def error(self, message: str, offset: int | None) -> SelectionError:
        """An error showing the line of the text with a caret under ``offset``.

        ``{place}`` in the message becomes "column N" (or "line L, column N").
        """
        if offset is None:
            return SelectionError(message.replace(" at {place}", ""))
        line, column, lineno = self._line_of(offset)
        place = f"line {lineno}, column {column + 1}" if "\n" in self.text else f"column {column + 1}"
        message = message.replace("{place}", place)
        shown, shown_column = line, column
        if len(line) > 100:  # a window around the place, not a 4000-character line
            left, right = max(0, column - 60), min(len(line), column + 40)
            prefix = "..." if left else ""
            shown = prefix + line[left:right] + ("..." if right < len(line) else "")
            shown_column = len(prefix) + column - left
        caret = " " * shown_column + "^"
        return SelectionError(f"{message}\n  {shown}\n  {caret}", column=column + 1)

    def syntax_error(self, offset: int, detail: str = "") -> SelectionError:
        headline = "syntax error in selection at {place}:"
        if detail:
            headline += " " + detail
        return self.error(headline, offset)

    def _line_of(self, offset: int) -> tuple[str, int, int]:
        offset = max(0, min(offset, len(self.text)))
        line_start = self.text.rfind("\n", 0, offset) + 1
        line_end = self.text.find("\n", offset)
        if line_end < 0:
            line_end = len(self.text)
        # Tabs count as one column; show them as one space so the caret lines up.
        line = self.text[line_start:line_end].replace("\t", " ")
        return line, offset - line_start, self.text.count("\n", 0, offset) + 1

    # -- tokenizing

    @classmethod
    def tokenize(cls, text: str) -> _Source:
        source = cls(text)
        for offset, char in enumerate(text):
            # Printable ASCII only: ast offsets are then character offsets, and a
            # pasted unicode minus or a NUL byte gets a clear message. Characters
            # that never belong in a selection are named here too, the same on
            # every Python version (the tokenizer reports them differently).
            if char in "'\"":
                continue  # a quoted string: only a string branch compares with one (see visit_Compare)
            if char == "#":
                raise source.error("comments ('#') are not allowed in a selection", offset)
            if not (" " <= char <= "~" or char in "\t\n") or char in "$?`":
                raise source.error(f"unexpected character {char!r} in selection at {{place}}", offset)
        if not text.strip():
            raise SelectionError("selection is empty")

        line_starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]

        def at(position: tuple[int, int]) -> int:
            row, col = position
            return line_starts[min(row, len(line_starts)) - 1] + col

        open_brackets: list[int] = []  # token indices
        tokens = source.tokens
        try:
            for info in tokenize.generate_tokens(io.StringIO(text).readline):
                kind = tokenize.tok_name[info.type]
                string = info.string
                start, end = at(info.start), at(info.end)
                if kind in ("ENCODING", "NEWLINE", "NL", "INDENT", "DEDENT", "ENDMARKER"):
                    continue
                if kind in ("NAME", "NUMBER"):
                    tokens.append(_Token(string, start, end))
                    continue
                if kind == "COMMENT":
                    raise source.error("comments ('#') are not allowed in a selection", start)
                if kind == "STRING":
                    if string[0] not in "'\"" or string[:3] in ("'''", '"""') or "\\" in string:
                        raise source.error(
                            "only plain quoted strings ('abc' or \"abc\": no prefix, escapes or triple "
                            "quotes) are allowed, to compare with a string branch",
                            start,
                        )
                    if tokens and tokens[-1].python[:1] in "'\"":
                        raise source.error("two quoted strings in a row: write them as one", start)
                    tokens.append(_Token(string, start, end))
                    continue
                if string == "!":  # an ERRORTOKEN before Python 3.12, an OP after
                    # C's '!' binds like unary minus, as Python's '~' does: parse it
                    # as '~' and remember that it was a '!' (for messages).
                    tokens.append(_Token("~", start, end))
                    source.c_nots.add(len(tokens) - 1)  # a token index here, an offset below
                    continue
                if kind == "ERRORTOKEN":
                    if string.isspace() or not string:
                        continue
                    raise source.error(f"unexpected character {string[0]!r} in selection at {{place}}", start)
                if kind != "OP":
                    raise source.error(f"unexpected {string!r} in selection at {{place}}", start)

                previous = tokens[-1] if tokens else None
                if (
                    string in ("&", "|")
                    and previous is not None
                    and previous.python == string
                    and previous.end == start
                ):
                    # '&&' and '||' arrive as two adjacent one-character tokens.
                    previous.python = "and" if string == "&" else "or"
                    previous.end = end
                    continue
                tokens.append(_Token(string, start, end))
                if string in "([{":
                    open_brackets.append(len(tokens) - 1)
                    if len(open_brackets) > MAX_DEPTH:
                        raise source.error(
                            f"selection nests brackets too deeply (more than {MAX_DEPTH} levels)",
                            start,
                        )
                elif string in ")]}":
                    if not open_brackets:
                        raise source.syntax_error(start, f"unmatched {string!r}")
                    opener = open_brackets.pop()
                    if tokens[opener].python + string not in ("()", "[]", "{}"):
                        raise source.syntax_error(
                            start, f"{string!r} does not match {tokens[opener].python!r}"
                        )
                    source.partner[opener] = len(tokens) - 1
        except tokenize.TokenError as err:
            if open_brackets:
                unclosed = tokens[open_brackets[-1]]
                raise source.syntax_error(unclosed.start, f"{unclosed.python!r} was never closed") from None
            position = err.args[1] if len(err.args) > 1 else None
            offset = at(position) if isinstance(position, tuple) else len(text)
            raise source.syntax_error(offset) from None
        except SyntaxError as err:  # IndentationError between lines of a multi-line text
            offset = at((err.lineno, (err.offset or 1) - 1)) if err.lineno else len(text)
            raise source.syntax_error(offset, "inconsistent indentation") from None
        if open_brackets:
            unclosed = tokens[open_brackets[-1]]
            raise source.syntax_error(unclosed.start, f"{unclosed.python!r} was never closed")

        # Rebuild one line of Python, one space between tokens; remember where
        # each token went so ast positions map back to the user's text.
        position = 0
        for token in tokens:
            token.new_start = position
            position += len(token.python) + 1
        source.python = " ".join(token.python for token in tokens)
        source.c_nots = {tokens[index].new_start for index in source.c_nots}
        source._new_starts = [token.new_start for token in tokens]
        source._index_by_start = {token.new_start: i for i, token in enumerate(tokens)}
        source._index_by_end = {token.new_start + len(token.python): i for i, token in enumerate(tokens)}
        return source

    def parse(self) -> ast.Expression:
        try:
            return ast.parse(self.python, mode="eval")
        except SyntaxError as err:
            if not err.offset or err.offset > len(self.python):
                raise self.syntax_error(len(self.text.rstrip()), "unexpected end") from None
            offset = self.original(err.offset - 1)
            message = err.msg or ""
            detail = "" if message.startswith("invalid syntax") else message
            if self.text.startswith("=", offset) and not self.text.startswith("==", offset):
                detail = "'=' is assignment; compare with '=='"
            raise self.syntax_error(offset, detail) from None
        except (RecursionError, MemoryError):
            raise SelectionError(
                f"selection is nested too deeply (more than {MAX_DEPTH} levels)"
            ) from None

    def check_depth(self, tree: ast.Expression) -> None:
        # Iterative, so that depth itself cannot exhaust the Python stack.
        stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise self.error(
                    f"selection is nested too deeply (more than {MAX_DEPTH} levels)",
                    self.node_offset(node),
                )
            for child in ast.iter_child_nodes(node):
                stack.append((child, depth + 1 if isinstance(child, ast.expr) else depth))

    # -- positions

    def original(self, new_offset: int) -> int:
        """Offset in the user's text of an offset in the rebuilt Python text."""
        if not self.tokens or new_offset >= len(self.python):
            return len(self.text.rstrip())
        index = max(0, bisect.bisect_right(self._new_starts, new_offset) - 1)
        return self.tokens[index].start

    def node_offset(self, node: ast.AST) -> int | None:
        offset = getattr(node, "col_offset", None)
        return None if offset is None else self.original(offset)

    def operator_offset(self, left: ast.AST) -> int | None:
        """Offset of the operator token right after ``left`` (and its closing parens)."""
        index = self._index_by_end.get(getattr(left, "end_col_offset", -1))
        if index is None:
            return self.node_offset(left)
        index += 1
        while index < len(self.tokens) and self.tokens[index].python == ")":
            index += 1
        return self.tokens[min(index, len(self.tokens) - 1)].start

    def token_span(self, node: ast.expr) -> tuple[int, int] | None:
        """Indices of the first and last token of ``node``, when it starts and ends on tokens."""
        first = self._index_by_start.get(node.col_offset)
        last = None if node.end_col_offset is None else self._index_by_end.get(node.end_col_offset)
        if first is None or last is None:
            return None
        return first, last

    def parenthesised(self, node: ast.expr) -> bool:
        """Whether the user wrote ``node`` directly inside its own parentheses."""
        span = self.token_span(node)
        if span is None or span[0] == 0:
            return False
        first, last = span
        return self.tokens[first - 1].python == "(" and self.partner.get(first - 1) == last + 1

    def text_of(self, node: ast.expr) -> str:
        span = self.token_span(node)
        if span is None:
            return ast.unparse(node)
        first, last = span
        return self.text[self.tokens[first].start : self.tokens[last].end]


# ---------------------------------------------------------------- whitelist and emit

_ARITHMETIC = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%"}
_COMPARISONS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}

_REFUSED_OPERATORS = {
    ast.FloorDiv: "'//' (floor division) is not supported in a selection",
    ast.LShift: "bit shifts ('<<') are not supported in a selection",
    ast.RShift: "bit shifts ('>>') are not supported in a selection",
    ast.BitXor: "'^' is not supported in a selection (for a power write **)",
    ast.MatMult: "'@' is not supported in a selection",
    ast.Is: "'is' is not allowed in a selection; compare with == or !=",
    ast.IsNot: "'is not' is not allowed in a selection; compare with == or !=",
    ast.In: "'in' is not allowed in a selection",
    ast.NotIn: "'not in' is not allowed in a selection",
}

_COMPREHENSION = "comprehensions are not allowed in a selection"
_CONTAINER = "lists, tuples, sets and dicts are not allowed in a selection"
_INDEXING = (
    "indexing ('[...]') is allowed only on an array branch by a whole number, e.g. pt[0]; "
    "for the whole list use len(x), sum(x), min(x), max(x), mean(x), any(x) or all(x)"
)
#: the largest index a selection may take (a branch list is never this long)
MAX_INDEX = 1_000_000
_REFUSED_NODES = {
    ast.Attribute: "attribute access ('.') is not allowed in a selection",
    ast.Subscript: _INDEXING,
    ast.Slice: _INDEXING,
    ast.Lambda: "lambda is not allowed in a selection",
    ast.ListComp: _COMPREHENSION,
    ast.SetComp: _COMPREHENSION,
    ast.DictComp: _COMPREHENSION,
    ast.GeneratorExp: _COMPREHENSION,
    ast.List: _CONTAINER,
    ast.Tuple: _CONTAINER,
    ast.Set: _CONTAINER,
    ast.Dict: _CONTAINER,
    ast.JoinedStr: "strings are not allowed in a selection",
    ast.NamedExpr: "assignment (':=') is not allowed in a selection",
    ast.IfExp: "'x if c else y' is not allowed in a selection; write where(c, x, y)",
    ast.Starred: "'*' unpacking is not allowed in a selection",
    ast.Await: "'await' is not allowed in a selection",
    ast.Yield: "'yield' is not allowed in a selection",
    ast.YieldFrom: "'yield' is not allowed in a selection",
}


class _Code(NamedTuple):
    """A piece of the numexpr expression."""

    text: str
    kind: str  # _BOOL or _NUM
    literal: int | float | None = None  # set for a bare number, which Python, not numexpr, computes with


def _is_number_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _is_number_literal(node.operand)
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
    )


def _balanced(codes: list[str], operator: str) -> str:
    # A balanced tree keeps numexpr's recursive compiler shallow for long and/or lists.
    if len(codes) == 1:
        return codes[0]
    middle = len(codes) // 2
    return f"({_balanced(codes[:middle], operator)} {operator} {_balanced(codes[middle:], operator)})"


class _Compiler:
    """Walks the parsed tree, refusing anything off the whitelist, and builds the numexpr string.

    numexpr builds its own tree by running Python on the expression text, so an
    operation whose operands are all bare literals would be computed by Python
    with Python's rules (``~True == -2``, ``1 / 0`` raises, ``True & x`` fails).
    Every operation therefore gets at least one numexpr operand: when all are
    literals, one becomes a named 0-d array (``_c0``); booleans always do.
    """

    def __init__(
        self, source: _Source, stream: str, branch_kinds: Mapping[str, str], unserved: Mapping[str, str]
    ):
        self.source = source
        self.stream = stream
        self.kinds = dict(branch_kinds)
        self.unserved = unserved
        self.inputs: list[_Input] = []
        self.constants: dict[str, np.ndarray] = {}
        self._locals: dict[object, str] = {}  # branch or literal -> synthetic name

    def compile(self, tree: ast.Expression) -> str:
        return self.truth(self.visit(tree.body))

    def refuse(self, message: str, node: ast.AST) -> SelectionError:
        return self.source.error(message, self.source.node_offset(node))

    def visit(self, node: ast.AST) -> _Code:
        handler = getattr(self, "visit_" + type(node).__name__, None)
        if handler is None:
            raise self._refusal(node)
        return handler(node)

    def _refusal(self, node: ast.AST) -> SelectionError:
        if isinstance(node, ast.Attribute):
            dotted = self._dotted(node)
            if dotted in self.kinds:
                return self.refuse(
                    f"branch {dotted!r} cannot be used in a selection: its name is not an identifier",
                    node,
                )
        message = _REFUSED_NODES.get(type(node), f"{type(node).__name__} is not allowed in a selection")
        return self.refuse(message, node)

    @staticmethod
    def _dotted(node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(node.id)
        return ".".join(reversed(parts))

    # -- names for numexpr

    def _local(self, reduction: str | None, branch: str, literal: str | None = None) -> str:
        key = (reduction, branch, literal)
        if key not in self._locals:
            prefix = "_b" if reduction is None else "_r"
            self._locals[key] = f"{prefix}{len(self._locals)}"
            self.inputs.append(_Input(self._locals[key], branch, reduction, literal))
        return self._locals[key]

    def _branch_of(self, node: ast.AST) -> str | None:
        """The branch a name or a dotted name (a split object's member) stands for, if any."""
        if isinstance(node, ast.Name):
            return node.id if node.id in self.kinds else None
        if isinstance(node, ast.Attribute):
            dotted = self._dotted(node)
            return dotted if dotted in self.kinds else None
        return None

    def _constant(self, value: np.generic) -> str:
        key = (value.dtype.str, value.item())
        if key not in self._locals:
            name = f"_c{len(self._locals)}"
            self._locals[key] = name
            array = np.asarray(value)
            array.flags.writeable = False
            self.constants[name] = array
        return self._locals[key]

    def _named(self, code: _Code) -> _Code:
        """The same value as a numexpr operand."""
        value = code.literal
        if value is None:
            return code
        scalar: np.generic
        if isinstance(value, float):
            scalar = np.float64(value)
        else:  # numexpr's rule for integer constants: int32 when it fits
            scalar = np.int32(value) if -(2**31) <= value < 2**31 else np.int64(value)
        return _Code(self._constant(scalar), _NUM)

    def _operands(self, *codes: _Code) -> list[_Code]:
        if codes and all(code.literal is not None for code in codes):
            return [self._named(codes[0]), *codes[1:]]
        return list(codes)

    def truth(self, code: _Code) -> str:
        if code.kind == _BOOL:
            return code.text
        return f"({self._named(code).text} != 0)"

    def number(self, code: _Code) -> str:
        return code.text if code.kind == _NUM else f"where({code.text}, 1, 0)"

    # -- leaves

    def visit_Constant(self, node: ast.Constant) -> _Code:
        value = node.value
        if isinstance(value, bool):
            return _Code(self._constant(np.bool_(value)), _BOOL)
        if isinstance(value, int):
            if abs(value) > _INT64_MAX:
                raise self.refuse("integer literal out of range (beyond 64 bits)", node)
            return _Code(str(value), _NUM, literal=value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self.refuse("number literal too large", node)
            return _Code(repr(value), _NUM, literal=value)
        if isinstance(value, complex):
            raise self.refuse("complex numbers are not allowed in a selection", node)
        if isinstance(value, (str, bytes)):
            raise self.refuse(
                "a quoted string can only be compared with == or != to a string branch "
                "(e.g. name == \"muon\")",
                node,
            )
        raise self.refuse(f"{value!r} is not allowed in a selection", node)

    def visit_Name(self, node: ast.Name) -> _Code:
        name = node.id
        kind = self.kinds.get(name)
        if kind is None:
            if name in FUNCTIONS or name in REDUCTIONS:
                raise self.refuse(f"{name!r} is a function; call it, e.g. {name}(...)", node)
            raise self.refuse(self._unknown_branch(name), node)
        return self._branch_code(name, node)

    def visit_Attribute(self, node: ast.Attribute) -> _Code:
        branch = self._branch_of(node)
        if branch is None:
            raise self._refusal(node)
        return self._branch_code(branch, node)

    def _branch_code(self, name: str, node: ast.AST) -> _Code:
        kind = self.kinds[name]
        if kind in _LISTS:
            what = "jagged (variable-length, a list per record)" if kind == "jagged" else "a fixed-size array"
            raise self.refuse(
                f"branch {name!r} of stream {self.stream} is {what} "
                f"and cannot be used as one number; use a reduction such as len({name}), "
                f"sum({name}), min({name}), max({name}), mean({name}), any({name}) or all({name}), "
                f"or an element such as {name}[0]",
                node,
            )
        if kind == "string":
            raise self.refuse(
                f"branch {name!r} of stream {self.stream} holds strings; compare it with == or != "
                f"to a quoted string, e.g. {name} == \"abc\"",
                node,
            )
        if kind != "flat":
            raise self.refuse(
                f"branch {name!r} of stream {self.stream} holds objects or nested lists, "
                f"which a selection cannot use",
                node,
            )
        return _Code(self._local(None, name), _NUM)

    def visit_Subscript(self, node: ast.Subscript) -> _Code:
        branch = self._branch_of(node.value)
        index = node.slice
        if branch is None or self.kinds[branch] not in _LISTS:
            if branch is not None:
                self._branch_code(branch, node.value)  # says what the branch is instead
            raise self.refuse(_INDEXING, node)
        if isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub):
            raise self.refuse("indexing counts from 0: negative indices are not supported", index)
        if not isinstance(index, ast.Constant) or isinstance(index.value, bool) or not isinstance(index.value, int):
            raise self.refuse(f"an index must be a whole number, e.g. {branch}[0]", index)
        if index.value > MAX_INDEX:
            raise self.refuse(f"index {index.value} is too large (at most {MAX_INDEX})", index)
        return _Code(self._local(f"[{index.value}]", branch), _NUM)

    def _string_comparison(self, node: ast.Compare) -> _Code | None:
        """``name == "x"`` or ``name != "x"`` (either way round) for a string branch; None if not one."""
        operands = [node.left, *node.comparators]
        has_text = [isinstance(o, ast.Constant) and isinstance(o.value, (str, bytes)) for o in operands]
        strings = [self._branch_of(o) for o in operands]
        string_branch = [b is not None and self.kinds[b] == "string" for b in strings]
        if not any(has_text) and not any(string_branch):
            return None
        if len(node.ops) != 1 or not isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            raise self.refuse("a string branch is compared with == or != only, to one quoted string", node)
        if sorted(has_text) != [False, True] or sorted(string_branch) != [False, True] or has_text == string_branch:
            raise self.refuse(
                "compare a string branch with == or != to a quoted string, e.g. name == \"abc\"", node
            )
        literal = operands[has_text.index(True)]
        assert isinstance(literal, ast.Constant)
        if not isinstance(literal.value, str):
            raise self.refuse("byte strings are not allowed in a selection; use a plain quoted string", literal)
        branch = strings[string_branch.index(True)]
        assert branch is not None
        code = self._local("==", branch, literal.value)
        return _Code(code if isinstance(node.ops[0], ast.Eq) else f"(~{code})", _BOOL)

    def _unknown_branch(self, name: str) -> str:
        if name in self.unserved:
            return f"branch {name!r} of stream {self.stream} cannot be served: {self.unserved[name]}"
        suggestion = did_you_mean(name, self.kinds, kind="branches", listed=_LISTED_BRANCHES)
        return f"unknown branch {name!r} in selection for stream {self.stream}; {suggestion}"

    # -- operators

    def visit_UnaryOp(self, node: ast.UnaryOp) -> _Code:
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.visit(node.operand)
            if isinstance(node.op, ast.UAdd):
                return _Code(self.number(operand), _NUM, operand.literal)
            if operand.literal is not None:  # a negative number, as Python folds it
                return _Code(f"(-{operand.text})", _NUM, -operand.literal)
            return _Code(f"(-{self.number(operand)})", _NUM)
        if isinstance(node.op, ast.Not):
            return _Code(f"(~{self.truth(self.visit(node.operand))})", _BOOL)
        # ast.Invert: the user's '~' or a C '!'; both are logical not here.
        spelled = self._check_negation(node)
        if spelled == "~" and _is_number_literal(node.operand):
            raise self.refuse(
                "'~' is a logical not in a selection, not bitwise; it cannot apply to a number literal",
                node,
            )
        return _Code(f"(~{self.truth(self.visit(node.operand))})", _BOOL)

    def _check_negation(self, node: ast.UnaryOp) -> str:
        """Refuse '!a ** b' (C has no '**'); return how the negation was spelled."""
        spelled = "!" if node.col_offset in self.source.c_nots else "~"
        operand = node.operand
        is_power = isinstance(operand, ast.BinOp) and isinstance(operand.op, ast.Pow)
        if is_power and not self.source.parenthesised(operand):
            raise self.refuse(
                f"ambiguous {spelled!r} before '**': write ({spelled}a) ** b or {spelled}(a ** b)", node
            )
        return spelled

    def visit_BinOp(self, node: ast.BinOp) -> _Code:
        op = type(node.op)
        if op in _REFUSED_OPERATORS:
            raise self.source.error(
                _REFUSED_OPERATORS[op], self.source.operator_offset(node.left)
            )
        if op in (ast.BitAnd, ast.BitOr):
            symbol = "&" if op is ast.BitAnd else "|"
            for side in (node.left, node.right):
                if _is_number_literal(side):
                    raise self.source.error(
                        f"{symbol!r} is a logical operator in a selection, not bitwise, and cannot take "
                        f"the number {self.source.text_of(side)}; compare first, e.g. (x != 0)",
                        self.source.operator_offset(node.left),
                    )
            left_truth = self.truth(self.visit(node.left))
            right_truth = self.truth(self.visit(node.right))
            return _Code(f"({left_truth} {symbol} {right_truth})", _BOOL)
        left, right = self.visit(node.left), self.visit(node.right)
        if op is ast.Pow:
            # float64 throughout: no integer overflow, and negative exponents work.
            base = self.number(self._named(left))
            return _Code(f"(({base} * 1.0) ** {self.number(right)})", _NUM)
        left, right = self._operands(left, right)
        if op is ast.Mod:
            return _Code(self._modulo(left, right), _NUM)
        return _Code(f"({self.number(left)} {_ARITHMETIC[op]} {self.number(right)})", _NUM)

    def _modulo(self, left: _Code, right: _Code) -> str:
        """``left % right`` without the integer trap: numexpr computes an int ``MIN % -1`` in C,
        which kills the process with SIGFPE. ``a % -1`` is ``-((-a) % 1)`` for ints (0, as numpy
        says; ``-MIN`` wraps to MIN, harmless) and exactly for floats, so a divisor of -1 becomes 1."""
        a, b = self.number(left), self.number(right)
        if right.literal is not None:
            return f"(-((-{a}) % 1))" if right.literal == -1 else f"({a} % {b})"
        return f"where({b} == -1, -((-{a}) % 1), {a} % where({b} == -1, 1, {b}))"

    def visit_BoolOp(self, node: ast.BoolOp) -> _Code:
        operator = "&" if isinstance(node.op, ast.And) else "|"
        return _Code(_balanced([self.truth(self.visit(value)) for value in node.values], operator), _BOOL)

    def visit_Compare(self, node: ast.Compare) -> _Code:
        text = self._string_comparison(node)
        if text is not None:
            return text
        operands = [node.left, *node.comparators]
        for operand in operands:
            self._check_comparison_operand(operand)
        visited = [self.visit(operand) for operand in operands]
        parts = []
        for index, op in enumerate(node.ops):
            if type(op) not in _COMPARISONS:
                raise self.source.error(
                    _REFUSED_OPERATORS[type(op)],
                    self.source.operator_offset(operands[index]),
                )
            left, right = self._operands(visited[index], visited[index + 1])
            if left.kind == right.kind:  # numexpr compares bools only with bools
                texts = left.text, right.text
            else:
                texts = self.number(left), self.number(right)
            parts.append(f"({texts[0]} {_COMPARISONS[type(op)]} {texts[1]})")
        return _Code(_balanced(parts, "&"), _BOOL)

    def _check_comparison_operand(self, operand: ast.expr) -> None:
        if self.source.parenthesised(operand):
            return
        if isinstance(operand, ast.BinOp) and isinstance(operand.op, (ast.BitAnd, ast.BitOr)):
            symbol = "&" if isinstance(operand.op, ast.BitAnd) else "|"
            word = "&&" if symbol == "&" else "||"
            raise self.source.error(
                f"ambiguous {symbol!r}: it binds tighter than comparisons (Python/numexpr precedence), "
                f"so this compares {self.source.text_of(operand)!r}; write each condition in parentheses, "
                f"(a == 1) {symbol} (b == 2), or use {word!r}: a == 1 {word} b == 2",
                self.source.operator_offset(operand.left),
            )
        if isinstance(operand, ast.UnaryOp) and isinstance(operand.op, ast.Invert):
            spelled = self._check_negation(operand)
            raise self.refuse(
                f"ambiguous {spelled!r} in a comparison: write ({spelled}a) == b to compare the "
                f"negation, or {spelled}(a == b) to negate the comparison",
                operand,
            )

    def visit_Call(self, node: ast.Call) -> _Code:
        if not isinstance(node.func, ast.Name):
            if type(node.func) in _REFUSED_NODES:
                raise self._refusal(node.func)
            raise self.refuse(
                f"only these functions can be called in a selection: {_allowed_functions()}", node
            )
        name = node.func.id
        if name not in FUNCTIONS and name not in REDUCTIONS:
            if name in self.kinds:
                raise self.refuse(f"branch {name!r} is not a function", node)
            raise self.refuse(
                f"unknown function {name!r} in selection; allowed: {_allowed_functions()}", node
            )
        if node.keywords:
            raise self.refuse(f"{name}() takes positional arguments only", node.keywords[0].value)
        for argument in node.args:
            if isinstance(argument, ast.Starred):
                raise self._refusal(argument)
        if name in REDUCTIONS:
            return self._reduction(name, node)
        arity = _ARITY.get(name, 1)
        if len(node.args) != arity:
            plural = "" if arity == 1 else "s"
            raise self.refuse(f"{name}() takes {arity} argument{plural} ({len(node.args)} given)", node)
        visited = [self.visit(argument) for argument in node.args]
        if name == "where":
            test, then, other = visited
            condition = self.truth(test)
            if then.kind == other.kind == _BOOL:
                return _Code(f"where({condition}, {then.text}, {other.text})", _BOOL)
            return _Code(f"where({condition}, {self.number(then)}, {self.number(other)})", _NUM)
        arguments = ", ".join(self.number(code) for code in self._operands(*visited))
        return _Code(f"{name}({arguments})", _NUM)

    def _reduction(self, name: str, node: ast.Call) -> _Code:
        usage = f"{name}() takes one variable-length branch, e.g. {name}(hits)"
        if len(node.args) != 1:
            raise self.refuse(f"{usage} ({len(node.args)} arguments given)", node)
        argument = node.args[0]
        branch = self._branch_of(argument)
        if branch is None:
            if isinstance(argument, ast.Name):
                raise self.refuse(self._unknown_branch(argument.id), argument)
            if type(argument) in _REFUSED_NODES:
                raise self._refusal(argument)
            raise self.refuse(f"{usage}; expressions inside {name}() are not supported", argument)
        kind = self.kinds[branch]
        if kind not in _LISTS:
            what = "is flat" if kind == "flat" else "holds strings" if kind == "string" else "holds objects"
            raise self.refuse(f"{usage}; branch {branch!r} of stream {self.stream} {what}", argument)
        return _Code(self._local(name, branch), _BOOL if name in ("any", "all") else _NUM)


def _allowed_functions() -> str:
    return (
        ", ".join(sorted(FUNCTIONS))
        + "; over variable-length branches: "
        + ", ".join(sorted(REDUCTIONS))
    )


# ---------------------------------------------------------------- numexpr and columns


def _typical_type(item: _Input, flat_type: type) -> type:
    if item.reduction is None or item.reduction == "sum":
        return flat_type
    if item.reduction in ("any", "all", "=="):
        return np.bool_
    if item.reduction == "len":
        return np.int64
    return np.float64


def _run(expression: str, columns: dict[str, np.ndarray]):
    """numexpr on our generated expression; it sees the columns and nothing else."""
    try:
        # optimization="none": no x/c -> x*(1/c) or x**3 -> x*x*x rewrites, so
        # results equal numpy's to the last bit. numexpr caches the compiled
        # program per expression and input types.
        return numexpr.evaluate(
            expression, local_dict=columns, global_dict={}, optimization="none", truediv=True
        )
    except (RecursionError, MemoryError):
        raise SelectionError("selection is too complex to compile; simplify it") from None
    except ValueError as err:
        if "range(0, 256)" in str(err):  # numexpr's register numbers are one byte
            raise SelectionError("selection has too many terms for the evaluator; simplify it") from None
        raise SelectionError(f"selection cannot be compiled: {err}") from None
    except Exception as err:  # numexpr's type checks raise assorted errors
        raise SelectionError(f"selection cannot be compiled: {err}") from None


def _numexpr_ready(branch: str, array: np.ndarray) -> np.ndarray:
    """The array in a dtype numexpr computes in natively (native byte order)."""
    kind, size = array.dtype.kind, array.dtype.itemsize
    target: type[np.generic]
    if kind == "b" or (kind in "iu" and size <= 2) or (kind == "i" and size == 4):
        target = np.int32
    elif kind == "i" or (kind == "u" and size == 4):
        target = np.int64
    elif kind == "u":
        # numexpr would read uint64 as int64; exact when it fits, else float64.
        fits = array.size == 0 or array.max() <= _INT64_MAX
        target = np.int64 if fits else np.float64
    elif kind == "f":
        target = np.float32 if size <= 4 else np.float64
    else:
        raise SelectionError(f"branch {branch!r} has type {array.dtype}, which a selection cannot use")
    return array.astype(target, copy=False)


def _flat_column(branch: str, value) -> np.ndarray:
    if isinstance(value, ak.Array):
        if value.ndim != 1:
            raise SelectionError(f"branch {branch!r} is not flat; use a reduction such as len({branch})")
        if value.layout.is_option:
            value = ak.fill_none(value, np.nan)
        value = ak.to_numpy(value)
    array = np.asarray(value)
    if array.ndim != 1:
        raise SelectionError(f"branch {branch!r} is not flat; use a reduction such as len({branch})")
    return _numexpr_ready(branch, array)


def _string_column(branch: str, value, literal: str) -> np.ndarray:
    strings = value if isinstance(value, ak.Array) else ak.Array(value)
    try:
        return np.asarray(ak.to_numpy(ak.fill_none(strings == literal, False)), dtype=bool)
    except Exception as err:
        raise SelectionError(f"cannot compare {branch!r} with a string: {err}") from None


def _element_column(branch: str, value, index: int) -> np.ndarray:
    lists = value if isinstance(value, ak.Array) else ak.Array(value)
    if lists.ndim != 2:
        raise SelectionError(f"{branch}[{index}] needs one list of numbers per record")
    try:
        padded = ak.pad_none(ak.values_astype(lists, np.float64), index + 1, axis=1)
        return np.asarray(ak.to_numpy(ak.fill_none(padded[:, index], np.nan)), dtype=np.float64)
    except Exception as err:
        raise SelectionError(f"cannot compute {branch}[{index}]: {err}") from None


def _reduced_column(reduction: str, branch: str, value) -> np.ndarray:
    lists = value if isinstance(value, ak.Array) else ak.Array(value)
    if lists.ndim != 2:
        raise SelectionError(
            f"{reduction}() needs a branch holding one list of numbers per record; {branch!r} has "
            f"{lists.ndim - 1} levels of lists"
        )
    fill: float  # 0, False, True or NaN: what a reduction of an empty list gives
    try:
        if reduction == "len":
            out, fill = ak.num(lists, axis=1), 0
        elif reduction == "sum":
            out, fill = ak.sum(lists, axis=1), 0
        elif reduction == "any":
            out, fill = ak.any(lists, axis=1), False
        elif reduction == "all":
            out, fill = ak.all(lists, axis=1), True
        else:
            as_float = ak.values_astype(lists, np.float64)
            function = {"min": ak.min, "max": ak.max, "mean": ak.mean}[reduction]
            out, fill = function(as_float, axis=1, mask_identity=True), np.nan
        array = np.asarray(ak.to_numpy(ak.fill_none(out, fill)))
    except Exception as err:  # records, strings and the like inside the lists
        raise SelectionError(f"cannot compute {reduction}({branch}): {err}") from None
    if reduction in ("any", "all"):
        return array.astype(bool, copy=False)
    return _numexpr_ready(branch, array)
