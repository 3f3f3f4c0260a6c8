"""Property tests of dispatcher.selection.

Random valid selections are generated as trees, printed as text in a random mix
of the three operator spellings with as few parentheses as each language's
precedence allows, compiled, evaluated on random data, and compared with a
numpy walk of the same tree. The walk mirrors numexpr's types (ints stay ints,
``/`` and ``**`` and the functions give float64, a condition used as a number
is an int32 0/1, float ``%`` is numexpr's ``x - floor(x / y) * y``).

Transcendental functions may differ by an ulp between numpy and numexpr, so
records where such a value sits on the edge of a comparison (or near zero,
or near a jump of ``%``) are marked fragile and left out of the comparison.
"""

import functools

import awkward as ak
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.selection import SelectionError, compile_selection

STREAM = "Prop"
KINDS = {"i": "flat", "j": "flat", "x": "flat", "y": "flat", "h": "jagged"}
DTYPES = {"i": np.int64, "j": np.int32, "x": np.float64, "y": np.float64}

INEXACT_FUNCTIONS = {"exp", "log", "log10", "sin", "cos", "tan", "arctan2"}
ONE_ARGUMENT = ("abs", "sqrt", "exp", "log", "log10", "sin", "cos", "tan")
RELATIVE_TOLERANCE = 1e-9
TINY = 1e-6

# ------------------------------------------------------------------ trees

NAMES = st.sampled_from(["i", "j", "x", "y"]).map(lambda name: ("name", name))
INT_LITERALS = st.integers(0, 9).map(lambda value: ("int", value))
FLOAT_LITERALS = st.sampled_from([0.25, 0.5, 1.5, 2.0, 0.1, 3.75]).map(lambda value: ("float", value))
BOOL_LITERALS = st.booleans().map(lambda value: ("bool", value))
EXPONENTS = st.sampled_from([("int", 0), ("int", 1), ("int", 2), ("int", 3), ("float", 0.5), ("neg", ("int", 1))])
NUM_LEAVES = st.one_of(NAMES, NAMES, NAMES, INT_LITERALS, FLOAT_LITERALS)
STYLES = st.sampled_from(["py", "c", "ne"])
COMPARISONS = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])


def comparison(operands):
    return st.integers(2, 3).flatmap(
        lambda size: st.tuples(
            st.just("cmp"),
            st.lists(operands, min_size=size, max_size=size).map(tuple),
            st.lists(COMPARISONS, min_size=size - 1, max_size=size - 1).map(tuple),
        )
    )


@functools.cache
def numbers(depth):
    if depth == 0:
        return NUM_LEAVES
    below = numbers(depth - 1)
    arithmetic = st.tuples(st.just("arith"), st.sampled_from("+-*/%"), below, below)
    return st.one_of(
        NUM_LEAVES,
        st.tuples(st.just("neg"), below),
        arithmetic,
        arithmetic,
        st.tuples(st.just("pow"), below, EXPONENTS),
        st.tuples(st.just("call"), st.sampled_from(ONE_ARGUMENT), st.tuples(below)),
        st.tuples(st.just("call"), st.just("arctan2"), st.tuples(below, below)),
        st.tuples(st.just("call"), st.just("where"), st.tuples(conditions(depth - 1), below, below)),
        conditions(depth - 1),  # a condition used as a number: 0 or 1
    )


@functools.cache
def conditions(depth):
    if depth == 0:
        leaf_comparison = comparison(NUM_LEAVES)
        return st.one_of(leaf_comparison, leaf_comparison, leaf_comparison, BOOL_LITERALS)
    below = conditions(depth - 1)
    # and/or/not in Python or C spelling take any value (numbers mean nonzero);
    # '&', '|', '~' never take a number literal (refused: they look bitwise).
    truthy = st.one_of(below, below, numbers(depth - 1))
    logical = st.one_of(below, below, NAMES)
    spelled = st.tuples(st.sampled_from(["and", "or"]), st.sampled_from(["py", "c"]),
                        st.lists(truthy, min_size=2, max_size=3).map(tuple))
    return st.one_of(
        comparison(numbers(depth - 1)),
        comparison(numbers(depth - 1)),
        spelled,
        spelled,
        st.tuples(st.sampled_from(["and", "or"]), st.just("ne"), st.lists(logical, min_size=2, max_size=3).map(tuple)),
        st.tuples(st.just("not"), st.sampled_from(["py", "c"]), truthy),
        st.tuples(st.just("not"), st.just("ne"), logical),
        st.tuples(st.just("call"), st.just("where"), st.tuples(below, below, below)),
    )


SELECTIONS = st.one_of(conditions(3), numbers(2))

# ------------------------------------------------------------------ printing

ATOM, POWER, UNARY, PRODUCT, SUM, AMPERSAND, PIPE, COMPARE, NOT, AND, OR = 12, 11, 10, 9, 8, 6, 5, 4, 3, 2, 1
BOOL_OP = {("and", "py"): " and ", ("and", "c"): " && ", ("and", "ne"): " & ",
           ("or", "py"): " or ", ("or", "c"): " || ", ("or", "ne"): " | "}
BOOL_PRECEDENCE = {("and", "py"): AND, ("and", "c"): AND, ("and", "ne"): AMPERSAND,
                   ("or", "py"): OR, ("or", "c"): OR, ("or", "ne"): PIPE}


def is_negation(node):
    return node[0] == "not" and node[1] in ("c", "ne")


def printed(node, minimal=True):
    """(text, precedence): parentheses only where precedence needs them (or everywhere)."""

    def wrap(child, least, force=False):
        text, precedence = printed(child, minimal)
        needs = precedence < least or force or (not minimal and precedence < ATOM)
        return f"({text})" if needs else text

    tag = node[0]
    if tag == "name":
        return node[1], ATOM
    if tag in ("int", "float"):
        return repr(node[1]), ATOM
    if tag == "bool":
        return str(node[1]), ATOM
    if tag == "neg":
        return "-" + wrap(node[1], UNARY), UNARY
    if tag == "arith":
        level = SUM if node[1] in "+-" else PRODUCT
        return f"{wrap(node[2], level)} {node[1]} {wrap(node[3], level + 1)}", level
    if tag == "pow":
        return f"{wrap(node[1], ATOM)} ** {wrap(node[2], UNARY)}", POWER
    if tag == "call":
        return f"{node[1]}({', '.join(printed(argument, minimal)[0] for argument in node[2])})", ATOM
    if tag == "cmp":
        operands, operators = node[1], node[2]
        # '&', '|', '!', '~' directly inside a comparison are refused as ambiguous: parenthesise.
        texts = [wrap(o, COMPARE + 1, force=(o[0] in ("and", "or") and o[1] == "ne") or is_negation(o))
                 for o in operands]
        pieces = [texts[0]]
        for operator, text in zip(operators, texts[1:]):
            pieces += [operator, text]
        return " ".join(pieces), COMPARE
    if tag in ("and", "or"):
        level = BOOL_PRECEDENCE[tag, node[1]]
        texts = [wrap(value, level if index == 0 else level + 1) for index, value in enumerate(node[2])]
        return BOOL_OP[tag, node[1]].join(texts), level
    if tag == "not":
        if node[1] == "py":
            return "not " + wrap(node[2], NOT), NOT
        symbol = "!" if node[1] == "c" else "~"
        # '!a ** b' is refused as ambiguous: parenthesise a power.
        return symbol + wrap(node[2], UNARY, force=node[2][0] == "pow"), UNARY
    raise AssertionError(node)


# ------------------------------------------------------------------ numpy walk


class Value:
    """A column as numexpr would compute it, with where it may differ by rounding."""

    def __init__(self, array, kind, exact, fragile):
        self.array = array
        self.kind = kind  # "bool" or "num"
        self.exact = exact  # no transcendental function below: bit-identical in both
        self.fragile = fragile


def as_number(value):
    return value.array.astype(np.int32) if value.kind == "bool" else value.array


def as_condition(value):
    return value.array if value.kind == "bool" else value.array != 0


def tiny(value):
    if value.exact or value.kind == "bool":
        return np.zeros(value.array.shape, bool)
    return np.abs(value.array) <= TINY


def close(left, right):
    scale = np.maximum(1.0, np.maximum(np.abs(left), np.abs(right)))
    return np.isfinite(left) & np.isfinite(right) & (np.abs(left - right) <= RELATIVE_TOLERANCE * scale)


def expected_of(node, data, n):
    tag = node[0]
    if tag == "name":
        return Value(data[node[1]], "num", True, np.zeros(n, bool))
    if tag in ("int", "float", "bool"):
        dtype = {"int": np.int32, "float": np.float64, "bool": bool}[tag]
        if tag == "int" and not -(2**31) <= node[1] < 2**31:
            dtype = np.int64  # numexpr's rule for an integer constant
        kind = "bool" if tag == "bool" else "num"
        return Value(np.full(n, node[1], dtype=dtype), kind, True, np.zeros(n, bool))

    children = [expected_of(child, data, n) for child in _children(node)]
    fragile = np.zeros(n, bool)
    for child in children:
        fragile |= child.fragile | tiny(child)
    exact = all(child.exact for child in children)

    if tag == "neg":
        return Value(-as_number(children[0]), "num", exact, fragile)
    if tag == "arith":
        left, right = as_number(children[0]), as_number(children[1])
        operator = node[1]
        if operator == "+":
            result = left + right
        elif operator == "-":
            result = left - right
        elif operator == "*":
            result = left * right
        elif operator == "/":
            result = np.true_divide(left, right)
        else:
            result = np.mod(left, right)
            if result.dtype.kind == "f":
                # numexpr computes x - floor(x / y) * y (and x % inf is nan), numpy
                # an exact remainder: they may differ by rounding, which next to a
                # multiple of y is a jump from ~0 to ~|y|.
                edge = np.minimum(np.abs(result), np.abs(np.abs(right) - np.abs(result)))
                result = left - np.floor(left / right) * right
                fragile |= edge <= RELATIVE_TOLERANCE * np.maximum(1.0, np.abs(right))
                exact = False
            else:
                # numexpr: ((a % b) + b) % b with C's truncating %, 0 for b == 0; the
                # sum wraps like any int sum (a difference from numpy only when a and b
                # are near the ends of the int range); b == -1 gives 0 (no C trap)
                divisor = np.where((right == 0) | (right == -1), 1, right)
                wrapped = np.fmod(np.fmod(left, divisor) + divisor, divisor)
                result = np.where((right == 0) | (right == -1), 0, wrapped).astype(wrapped.dtype)
        return Value(result, "num", exact, fragile)
    if tag == "pow":
        base = as_number(children[0]).astype(np.float64)
        return Value(np.power(base, as_number(children[1])), "num", False, fragile)
    if tag == "call":
        name = node[1]
        if name == "where":
            condition, then, other = children
            if then.kind == other.kind == "bool":
                return Value(np.where(as_condition(condition), then.array, other.array), "bool", exact, fragile)
            result = np.where(as_condition(condition), as_number(then), as_number(other))
            return Value(result, "num", exact, fragile)
        arguments = [as_number(child).astype(np.float64) for child in children]
        return Value(getattr(np, name)(*arguments), "num", exact and name not in INEXACT_FUNCTIONS, fragile)
    if tag == "cmp":
        result = np.ones(n, bool)
        for index, operator in enumerate(node[2]):
            left, right = children[index], children[index + 1]
            if left.kind == right.kind == "bool":
                a, b = left.array, right.array
            else:
                a, b = as_number(left), as_number(right)
                if not (left.exact and right.exact):
                    fragile |= close(a.astype(np.float64), b.astype(np.float64))
            result &= {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
                       ">": np.greater, ">=": np.greater_equal}[operator](a, b)
        return Value(result, "bool", True, fragile)
    if tag in ("and", "or"):
        combine = np.logical_and if tag == "and" else np.logical_or
        result = as_condition(children[0])
        for child in children[1:]:
            result = combine(result, as_condition(child))
        return Value(result, "bool", True, fragile)
    if tag == "not":
        return Value(~as_condition(children[0]), "bool", True, fragile)
    raise AssertionError(node)


def _children(node):
    tag = node[0]
    if tag == "neg":
        return [node[1]]
    if tag == "arith":
        return [node[2], node[3]]
    if tag == "pow":
        return [node[1], node[2]]
    if tag == "call":
        return list(node[2])
    if tag == "cmp":
        return list(node[1])
    if tag in ("and", "or"):
        return list(node[2])
    if tag == "not":
        return [node[2]]
    raise AssertionError(node)


def expected_selection(tree, data, n):
    with np.errstate(all="ignore"):
        value = expected_of(tree, data, n)
    return as_condition(value), value.fragile | tiny(value)


# ------------------------------------------------------------------ data

FLOATS = st.one_of(
    st.integers(-20, 20).map(lambda k: k / 4),
    st.sampled_from([0.0, -0.0, 0.1, 1e-3, np.nan, np.inf, -np.inf]),
)


@st.composite
def columns(draw):
    n = draw(st.integers(0, 25))
    ints = st.lists(st.integers(-10, 10), min_size=n, max_size=n)
    floats = st.lists(FLOATS, min_size=n, max_size=n)
    return n, {
        "i": np.array(draw(ints), dtype=DTYPES["i"]),
        "j": np.array(draw(ints), dtype=DTYPES["j"]),
        "x": np.array(draw(floats), dtype=DTYPES["x"]),
        "y": np.array(draw(floats), dtype=DTYPES["y"]),
    }


SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(tree=SELECTIONS, sample=columns())
def test_random_selection_matches_numpy_walk_of_its_tree(tree, sample):
    n, data = sample
    text, _ = printed(tree)
    selection = compile_selection(text, STREAM, KINDS)
    result = selection.evaluate(data)
    expected, fragile = expected_selection(tree, data, n)
    assert result.dtype == np.bool_ and result.shape == (n,)
    solid = ~fragile
    np.testing.assert_array_equal(result[solid], expected[solid], err_msg=text)


@SETTINGS
@given(tree=SELECTIONS, sample=columns())
def test_minimal_and_full_parentheses_select_the_same(tree, sample):
    _, data = sample
    minimal, _ = printed(tree)
    full, _ = printed(tree, minimal=False)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(
            compile_selection(minimal, STREAM, KINDS).evaluate(data),
            compile_selection(full, STREAM, KINDS).evaluate(data),
            err_msg=f"{minimal}  vs  {full}",
        )


TOKENS = st.sampled_from(
    ["x", "i", "h", "nope", "(", ")", "[", "]", "&&", "||", "!", "~", "&", "|", "not", "and", "or",
     "==", "!=", "<", "+", "-", "*", "/", "%", "**", "//", ",", "1", "0.5", "1e999", "sqrt", "len",
     "where", "max", "'", '"', ".", "=", ":=", "lambda", ":", "if", "else", "for", "in", "is",
     "#", "$", "@", "^", "__import__", "True", "None", " ", "\n", "\t", "\\"]
)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(TOKENS, max_size=30))
def test_any_token_soup_is_either_compiled_or_refused_with_selection_error(pieces):
    text = " ".join(pieces) if len(pieces) % 2 else "".join(pieces)
    try:
        selection = compile_selection(text, STREAM, KINDS)
    except SelectionError as err:
        assert str(err)
        return
    data = {
        "x": np.array([0.5, -1.0, 0.0]),
        "i": np.array([1, 0, -3]),
        "h": ak.Array([[1, 2], [], [3]]),
    }
    assert selection.evaluate(data).shape == (3,)


# ------------------------------------------------------------------ edge values

I64, I32 = np.iinfo(np.int64), np.iinfo(np.int32)
EDGE_INTS = [int(I64.min), int(I64.min) + 1, -2, -1, 0, 1, 2, int(I64.max) - 1, int(I64.max)]
EDGE_INT32S = [int(I32.min), int(I32.min) + 1, -1, 0, 1, int(I32.max)]
EDGE_FLOATS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308,
               -1.7976931348623157e308, 2.0**63, -(2.0**63), -1.0, 1.0, 0.5]
EDGE_LITERALS = st.sampled_from([0, 1, 2, 2147483647, 4294967296, 9223372036854775807]).map(lambda v: ("int", v))


@functools.cache
def edge_numbers(depth):
    leaves = st.one_of(NAMES, NAMES, EDGE_LITERALS, st.tuples(st.just("neg"), EDGE_LITERALS))
    if depth == 0:
        return leaves
    below = edge_numbers(depth - 1)
    return st.one_of(
        leaves,
        st.tuples(st.just("neg"), below),
        st.tuples(st.just("arith"), st.sampled_from("+-*/%"), below, below),
        st.tuples(st.just("arith"), st.just("%"), below, below),
        st.tuples(st.just("pow"), below, EXPONENTS),
        st.tuples(st.just("call"), st.just("abs"), st.tuples(below)),
    )


EDGE_SELECTIONS = comparison(edge_numbers(2))


@st.composite
def edge_columns(draw):
    n = draw(st.integers(1, 12))
    return n, {
        "i": np.array(draw(st.lists(st.sampled_from(EDGE_INTS), min_size=n, max_size=n)), dtype=np.int64),
        "j": np.array(draw(st.lists(st.sampled_from(EDGE_INT32S), min_size=n, max_size=n)), dtype=np.int32),
        "x": np.array(draw(st.lists(st.sampled_from(EDGE_FLOATS), min_size=n, max_size=n)), dtype=np.float64),
        "y": np.array(draw(st.lists(st.sampled_from(EDGE_FLOATS), min_size=n, max_size=n)), dtype=np.float64),
    }


@SETTINGS
@given(tree=EDGE_SELECTIONS, sample=edge_columns())
def test_selection_over_integer_and_float_edge_values_matches_the_walk_and_never_traps(tree, sample):
    """Smallest and largest ints (int64 and int32), -1, 0, NaN, infinities, signed zeros,
    subnormals and the largest floats, through every arithmetic operator: numexpr must
    neither trap (an int MIN % -1 is SIGFPE in C) nor differ from the walk."""
    n, data = sample
    text, _ = printed(tree)
    result = compile_selection(text, STREAM, KINDS).evaluate(data)
    expected, fragile = expected_selection(tree, data, n)
    assert result.dtype == np.bool_ and result.shape == (n,)
    solid = ~fragile
    np.testing.assert_array_equal(result[solid], expected[solid], err_msg=text)
