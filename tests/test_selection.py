"""Unit tests of dispatcher.selection: the language, its precedence, and what it refuses."""

import ast
import time
import tokenize
import warnings

import awkward as ak
import numpy as np
import pytest

from dispatcher.selection import (
    FUNCTIONS,
    MAX_DEPTH,
    MAX_LENGTH,
    REDUCTIONS,
    Selection,
    SelectionError,
    compile_selection,
)

STREAM = "DaqSnarl"
N = 40
_rng = np.random.default_rng(20240611)

EVT = np.arange(N, dtype=np.int64)
KIND = EVT % 3
A = _rng.integers(-3, 4, N)
B = _rng.integers(-3, 4, N)
X = np.round(_rng.uniform(-2.0, 2.0, N), 2)
X[:3] = [0.0, np.nan, -0.0]
Y = np.round(_rng.uniform(-2.0, 2.0, N), 2)
FLAG = _rng.random(N) > 0.5
SMALL = _rng.integers(-5, 6, N).astype(np.int32)
HITS = ak.Array([list(range(i % 5)) for i in range(N)])  # i % 5 == 0: empty
ADC = ak.Array([[float(_rng.integers(-50, 200)) for _ in range(i % 4)] for i in range(N)])
HITFLAGS = ak.Array([[bool(j % 2) for j in range(i % 3)] for i in range(N)])

DATA = {
    "evt": EVT,
    "kind": KIND,
    "a": A,
    "b": B,
    "x": X,
    "y": Y,
    "flag": FLAG,
    "small": SMALL,
    "nhits": np.asarray(ak.num(HITS)),
    "run": np.full(N, 7),
    "snarl": EVT + 1000,
    "hits": HITS,
    "adc": ADC,
    "hitflags": HITFLAGS,
}
KINDS = {name: ("jagged" if isinstance(value, ak.Array) else "flat") for name, value in DATA.items()}


def select(text, data=DATA, kinds=KINDS):
    selection = compile_selection(text, STREAM, kinds)
    result = selection.evaluate(data)
    assert result.dtype == np.bool_
    assert result.shape == (len(next(iter(data.values()))),)
    return result


def refused(text, kinds=KINDS):
    with pytest.raises(SelectionError) as info:
        compile_selection(text, STREAM, kinds)
    return str(info.value)


def assert_selects(text, expected, data=DATA, kinds=KINDS):
    np.testing.assert_array_equal(select(text, data, kinds), np.asarray(expected, dtype=bool))


def per_list(function, lists, empty):
    return np.array([function(values) if values else empty for values in ak.to_list(lists)])


# ------------------------------------------------------------------ logical operators


def test_c_and_binds_looser_than_comparison():
    assert_selects("evt % 7 == 0 && kind != 2", (EVT % 7 == 0) & (KIND != 2))


@pytest.mark.parametrize(
    "text",
    [
        "evt % 7 == 0 && kind != 2",
        "evt % 7 == 0 and kind != 2",
        "(evt % 7 == 0) & (kind != 2)",
        "(evt % 7 == 0)&&(kind != 2)",
    ],
)
def test_and_in_all_three_spellings_selects_the_same(text):
    assert_selects(text, (EVT % 7 == 0) & (KIND != 2))


@pytest.mark.parametrize("text", ["a > 1 || b < -1", "a > 1 or b < -1", "(a > 1) | (b < -1)"])
def test_or_in_all_three_spellings_selects_the_same(text):
    assert_selects(text, (A > 1) | (B < -1))


@pytest.mark.parametrize("text", ["!(x > 0)", "not x > 0", "~(x > 0)", "not (x > 0)"])
def test_not_in_all_three_spellings_selects_the_same(text):
    with np.errstate(invalid="ignore"):
        assert_selects(text, ~(X > 0))


def test_python_not_binds_looser_than_comparison():
    assert_selects("not a == 1", ~(A == 1))


def test_c_not_binds_tighter_than_and():
    assert_selects("!flag && a > 0", ~FLAG & (A > 0))


def test_c_not_binds_tighter_than_arithmetic():
    # C reads this as ((!a) + 1) == 1, i.e. a != 0
    assert_selects("!a + 1 == 1", (A == 0).astype(int) + 1 == 1)


def test_c_and_binds_tighter_than_c_or():
    assert_selects("a == 1 || b == 2 && kind == 0", (A == 1) | ((B == 2) & (KIND == 0)))


def test_python_and_binds_tighter_than_python_or():
    assert_selects("a == 1 or b == 2 and kind == 0", (A == 1) | ((B == 2) & (KIND == 0)))


def test_numexpr_ampersand_binds_tighter_than_pipe():
    assert_selects("(a == 1) | (b == 2) & (kind == 0)", (A == 1) | ((B == 2) & (KIND == 0)))


def test_styles_mix_in_one_selection():
    assert_selects(
        "a > 0 and b > 0 || !(evt % 2 == 0) & (kind == 1)",
        ((A > 0) & (B > 0)) | (~(EVT % 2 == 0) & (KIND == 1)),
    )


def test_ampersand_between_comparisons_is_refused_because_python_precedence_would_compare_1_and_b():
    # With Python/numexpr precedence this reads a == (1 & b) == 2, which a
    # physicist never means; the error says so and gives both fixes.
    message = refused("a == 1 & b == 2")
    assert "ambiguous '&'" in message
    assert "'1 & b'" in message
    assert "(a == 1) & (b == 2)" in message
    assert "a == 1 && b == 2" in message
    assert "\n  a == 1 & b == 2\n         ^" in message


def test_pipe_as_comparison_operand_is_refused():
    assert "ambiguous '|'" in refused("a | b == 1")


def test_parenthesised_ampersand_inside_comparison_is_logical():
    assert_selects("a == (b & kind)", A == ((B != 0) & (KIND != 0)).astype(int))


@pytest.mark.parametrize("text", ["a & 4", "4 | a", "~0", "(~-1) > 0", "a & -1"])
def test_bitwise_looking_operators_with_number_literals_are_refused(text):
    assert "not bitwise" in refused(text)


@pytest.mark.parametrize("text", ["!a == b", "~a == b", "b < !a", "!a == b && x > 0"])
def test_negation_compared_directly_is_refused_as_ambiguous(text):
    message = refused(text)
    assert "ambiguous" in message
    assert "== b to compare the negation" in message


def test_parenthesised_c_not_compares_the_negation():
    assert_selects("(!a) == b", (A == 0).astype(int) == B)


def test_c_not_of_a_comparison_negates_it():
    assert_selects("!(a == b)", A != B)


def test_not_before_power_is_refused_as_ambiguous():
    message = refused("!x ** 2 > 1")
    assert "(!a) ** b or !(a ** b)" in message


def test_double_c_not_is_truth_value():
    assert_selects("!!a", A != 0)


def test_numbers_as_conditions_are_true_when_nonzero():
    assert_selects("a", A != 0)
    assert_selects("a && kind", (A != 0) & (KIND != 0))
    assert_selects("not a or x", (A == 0) | (X != 0))


def test_nan_as_condition_counts_as_nonzero_like_root():
    assert select("x")[1]  # X[1] is NaN
    assert not select("x")[0]


def test_bool_branch_works_as_condition_and_as_number():
    assert_selects("flag", FLAG)
    assert_selects("flag && a > 0", FLAG & (A > 0))
    assert_selects("flag == 1", FLAG)
    assert_selects("flag + flag == 2", FLAG)
    assert_selects("!flag", ~FLAG)


def test_true_and_false_literals():
    assert_selects("True", np.ones(N))
    assert_selects("False", np.zeros(N))
    assert_selects("x > 0 and True", X > 0)
    assert_selects("(a > 0) == True", A > 0)
    assert_selects("True + 1 == 2", np.ones(N))


# ------------------------------------------------------------------ comparisons


def test_chained_comparison_means_each_pair():
    with np.errstate(invalid="ignore"):
        assert_selects("0 < x < 1", (0 < X) & (X < 1))
        assert_selects("-1 <= x < y <= 2", (-1 <= X) & (X < Y) & (Y <= 2))
    assert_selects("a < b == kind", (A < B) & (B == KIND))


def test_comparing_two_conditions():
    assert_selects("(a > 0) == (b > 0)", (A > 0) == (B > 0))
    assert_selects("(a > 0) != (b > 0)", (A > 0) != (B > 0))


def test_nan_comparisons_are_false_except_not_equal():
    assert not select("x == x")[1]
    assert not select("x < 1")[1]
    assert select("x != 0")[1]


# ------------------------------------------------------------------ arithmetic

INTS = {"i": np.array([-7, 7, -7, 7, 7, 0, 3]), "j": np.array([3, -3, -3, 3, 0, 0, 2])}
INT_KINDS = {"i": "flat", "j": "flat"}


def test_integer_division_is_true_division():
    assert select("i / 2 == 3.5", INTS, INT_KINDS).tolist() == [False, True, False, True, True, False, False]
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = INTS["i"] / INTS["j"] == -7 / 3
    assert_selects("i / j == -7 / 3", expected, INTS, INT_KINDS)


def test_modulo_takes_sign_of_divisor_like_numpy():
    # -7 % 3 == 2, 7 % -3 == -2, -7 % -3 == -1, 7 % 3 == 1 (Python and numpy rules, not C)
    for value in (2, -2, -1, 1):
        with np.errstate(divide="ignore"):
            expected = np.mod(INTS["i"], INTS["j"]) == value
        assert_selects(f"i % j == {value}", expected, INTS, INT_KINDS)
    assert select("i % j == 2", INTS, INT_KINDS)[0]
    assert select("i % j == -2", INTS, INT_KINDS)[1]


def test_modulo_by_zero_is_zero_for_integers_and_nan_for_floats():
    assert select("i % 0 == 0", INTS, INT_KINDS).all()
    floats = {"f": np.array([1.5, -2.0, 0.0])}
    assert not select("f % 0 == f % 0", floats, {"f": "flat"}).any()  # NaN


def test_modulo_by_infinity_is_nan_as_in_numexpr():
    floats = {"f": np.array([0.0, 5.0, -5.0]), "g": np.array([np.inf, np.inf, -np.inf])}
    assert not select("f % g == f % g", floats, {"f": "flat", "g": "flat"}).any()


def test_division_by_zero_gives_inf_or_nan_and_never_raises():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_selects("i / 0 > 1e300", INTS["i"] > 0, INTS, INT_KINDS)
        assert_selects("i / 0 < -1e300", INTS["i"] < 0, INTS, INT_KINDS)
        assert_selects("(i - i) / 0 == 0", np.zeros(7), INTS, INT_KINDS)
        assert_selects("(i - i) / 0 != 0", np.ones(7), INTS, INT_KINDS)
        assert_selects("log(i) > 0", [False, True, False, True, True, False, True], INTS, INT_KINDS)


def test_power_is_computed_in_floating_point():
    assert select("2 ** -1 == 0.5", INTS, INT_KINDS).all()
    # 7 ** -3 is not 0 as it would be in integer arithmetic
    assert select("i ** j == 1 / 343", INTS, INT_KINDS).tolist() == [False, True, False, False, False, False, False]
    assert_selects("i ** -1 < 0", INTS["i"] < 0, INTS, INT_KINDS)
    # no integer wrap-around: 7 ** 40 is a large positive float
    assert_selects("i ** 40 > 1e33", np.abs(INTS["i"]) == 7, INTS, INT_KINDS)
    with np.errstate(invalid="ignore"):
        assert_selects("x ** 0.5 > 1", np.power(X, 0.5) > 1)


def test_integer_arithmetic_stays_exact_beyond_float_precision():
    big = {"t": np.array([2**53, 2**53 + 1, 2**62 + 1], dtype=np.int64)}
    assert select("t == 9007199254740993", big, {"t": "flat"}).tolist() == [False, True, False]
    assert select("t - 1 == 9007199254740992", big, {"t": "flat"}).tolist() == [False, True, False]


def test_uint64_values_above_int64_range_compare_correctly():
    data = {"u": np.array([1, 2**63 + 5, 2**64 - 1], dtype=np.uint64)}
    assert select("u > 0", data, {"u": "flat"}).all()
    assert select("u > 1e19", data, {"u": "flat"}).tolist() == [False, False, True]


def test_unary_minus_and_plus():
    assert_selects("-a > 0", -A > 0)
    assert_selects("+a > 0", A > 0)
    assert_selects("- -a > 0", A > 0)
    assert_selects("-(a > 0) == -1", A > 0)


def test_arithmetic_precedence_follows_python():
    assert_selects("a + b * kind == 2", A + B * KIND == 2)
    assert_selects("-a ** 2 == -1", -(A.astype(float) ** 2) == -1)
    assert_selects("2 ** 3 ** 2 == 512", np.ones(N))


def test_float_and_int_branches_mix():
    with np.errstate(invalid="ignore"):
        assert_selects("x * a + y / 2 > 0.25", X * A + Y / 2 > 0.25)
        assert_selects("small * x > 1", SMALL * X > 1)


def test_float32_branch_is_usable():
    data = {"f": np.array([0.25, 0.5, 1.5, -3.0], dtype=np.float32)}
    assert select("f > 0.5", data, {"f": "flat"}).tolist() == [False, False, True, False]
    assert select("sqrt(f) == 0.5", data, {"f": "flat"}).tolist() == [True, False, False, False]


def test_literal_forms():
    assert_selects("evt == 0x10", EVT == 16)
    assert_selects("evt < 1_0", EVT < 10)
    assert_selects("x > 1e-1", X > 0.1)
    assert_selects("x > .5", X > 0.5)


# ------------------------------------------------------------------ functions

_FUNCTION_CASES = [
    ("abs(x) > 1", lambda: np.abs(X) > 1),
    ("sqrt(x) > 0.5", lambda: np.sqrt(X) > 0.5),
    ("exp(x) > 2", lambda: np.exp(X) > 2),
    ("log(x) < -0.5", lambda: np.log(X) < -0.5),
    ("log10(x) > -0.3", lambda: np.log10(X) > -0.3),
    ("sin(x) > 0.5", lambda: np.sin(X) > 0.5),
    ("cos(x) < 0.5", lambda: np.cos(X) < 0.5),
    ("tan(x) > 1", lambda: np.tan(X) > 1),
    ("arctan2(y, x) > 1", lambda: np.arctan2(Y, X) > 1),
    ("where(x > 0, x, -y) > 0.5", lambda: np.where(X > 0, X, -Y) > 0.5),
    ("abs(a) == 2", lambda: np.abs(A) == 2),
    ("sqrt(evt) == 3", lambda: np.sqrt(EVT) == 3),
]


@pytest.mark.parametrize("text, expected", _FUNCTION_CASES, ids=[case[0] for case in _FUNCTION_CASES])
def test_each_allowed_function_matches_numpy(text, expected):
    with np.errstate(invalid="ignore", divide="ignore"):
        truth = expected()
    assert_selects(text, truth)


def test_every_allowed_function_is_covered():
    covered = {text.split("(")[0] for text, _ in _FUNCTION_CASES}
    assert covered == FUNCTIONS


def test_where_of_two_conditions_is_a_condition():
    assert_selects("where(flag, a > 0, b > 0)", np.where(FLAG, A > 0, B > 0))
    assert_selects("where(flag, a > 0, 2) == 2", ~FLAG & True)
    assert_selects("where(a, 1, 0)", A != 0)


def test_function_arguments_may_be_conditions():
    assert_selects("abs(a > 0) == 1", A > 0)


# ------------------------------------------------------------------ reductions


def test_len_of_jagged_branch_counts_entries():
    assert_selects("len(hits) > 2", per_list(len, HITS, 0) > 2)
    assert_selects("len(hits) == 0", np.asarray(ak.num(HITS)) == 0)


def test_sum_of_empty_list_is_zero():
    expected = per_list(sum, ADC, 0.0)
    assert_selects("sum(adc) > 10", expected > 10)
    assert_selects("sum(adc) == 0", expected == 0)
    assert select("sum(hits) == 0")[0]  # HITS[0] is empty


def test_max_min_mean_of_empty_list_are_nan_so_comparisons_fail():
    for name, function in (("max", max), ("min", min), ("mean", lambda v: sum(v) / len(v))):
        values = per_list(function, ADC, np.nan)
        with np.errstate(invalid="ignore"):
            assert_selects(f"{name}(adc) > 20", values > 20)
            assert_selects(f"{name}(adc) <= 20", values <= 20)
        empty = np.asarray(ak.num(ADC)) == 0
        assert not select(f"{name}(adc) <= 1e300")[empty].any()
        assert not select(f"{name}(adc) > -1e300")[empty].any()
        assert select(f"{name}(adc) != 0")[empty].all()


def test_max_of_adc_above_threshold():
    assert_selects("max(adc) > 100", per_list(max, ADC, -np.inf) > 100)


def test_any_and_all_of_empty_list_are_false_and_true():
    assert_selects("any(hitflags)", per_list(any, HITFLAGS, False))
    assert_selects("all(hitflags)", per_list(all, HITFLAGS, True))
    assert_selects("any(hits)", per_list(any, HITS, False))
    assert_selects("!all(hits) && len(hits) > 0", ~per_list(all, HITS, True) & (per_list(len, HITS, 0) > 0))


def test_sum_of_boolean_lists_counts_true_entries():
    assert_selects("sum(hitflags) == 1", per_list(sum, HITFLAGS, 0) == 1)


def test_reductions_combine_with_flat_branches():
    expected = (per_list(len, HITS, 0) > 1) & (per_list(max, ADC, np.nan) > 3) | (EVT == 0)
    with np.errstate(invalid="ignore"):
        assert_selects("len(hits) > 1 and max(adc) > 3 or evt == 0", expected)


def test_reduction_over_option_lists_treats_missing_as_empty():
    data = {"h": ak.Array([[1, 2], None, []])}
    assert select("len(h) == 0", data, {"h": "jagged"}).tolist() == [False, True, True]


def test_jagged_branch_used_bare_is_refused_naming_it_and_suggesting_reductions():
    message = refused("hits > 2")
    assert "branch 'hits' of stream DaqSnarl is jagged (variable-length" in message
    assert "len(hits)" in message and "sum(hits)" in message


def test_reduction_of_flat_branch_is_refused():
    assert "'evt' of stream DaqSnarl is flat" in refused("sum(evt) > 2")


def test_reduction_of_expression_is_refused():
    assert "expressions inside sum() are not supported" in refused("sum(adc * 2) > 2")


def test_reduction_with_two_arguments_is_refused():
    assert "len() takes one variable-length branch" in refused("len(hits, adc) > 2")


def test_every_reduction_is_covered():
    for name in REDUCTIONS:
        select(f"{name}(adc) > 0")


# ------------------------------------------------------------------ evaluate


def test_zero_length_input_gives_empty_bool_array():
    empty = {name: value[:0] for name, value in DATA.items()}
    for text in ("evt > 2", "len(hits) > 1 and max(adc) > 3", "1 > 0", "True"):
        result = compile_selection(text, STREAM, KINDS).evaluate(empty)
        assert result.dtype == np.bool_ and result.shape == (0,)


def test_constant_selection_broadcasts_to_record_count():
    assert_selects("1 > 0", np.ones(N))
    assert_selects("2 < 1", np.zeros(N))
    assert_selects("0", np.zeros(N))


def test_branches_lists_exactly_what_is_read():
    selection = compile_selection("x > 0 and len(hits) > 1 or max(hits) > 2 and x < 5", STREAM, KINDS)
    assert isinstance(selection, Selection)
    assert selection.branches == frozenset({"x", "hits"})
    assert selection.text == "x > 0 and len(hits) > 1 or max(hits) > 2 and x < 5"
    assert selection.stream == STREAM


def test_evaluate_needs_only_the_branches_read():
    selection = compile_selection("evt > 3 && len(hits) > 1", STREAM, KINDS)
    result = selection.evaluate({"evt": EVT, "hits": HITS})
    np.testing.assert_array_equal(result, (EVT > 3) & (per_list(len, HITS, 0) > 1))


def test_missing_branch_at_evaluate_names_it():
    selection = compile_selection("evt > 3", STREAM, KINDS)
    with pytest.raises(KeyError, match="evt"):
        selection.evaluate({"x": X})


def test_flat_branches_may_be_awkward_arrays():
    data = {"evt": ak.Array(EVT), "x": ak.Array(X)}
    with np.errstate(invalid="ignore"):
        assert_selects("evt > 3 && x > 0", (EVT > 3) & (X > 0), data)


def test_big_endian_and_small_integer_arrays_work():
    data = {"e": EVT.astype(">i8"), "s": SMALL.astype(np.int8), "h": SMALL.astype(np.uint16)}
    kinds = {"e": "flat", "s": "flat", "h": "flat"}
    assert_selects("e > 3 && s < 2 && h > 1", (EVT > 3) & (SMALL < 2) & (SMALL.astype(np.uint16) > 1), data, kinds)


def test_selection_evaluates_repeatedly_with_changing_types():
    selection = compile_selection("v > 1", STREAM, {"v": "flat"})
    for dtype in (np.int64, np.float64, np.int32, np.float32, np.int64):
        np.testing.assert_array_equal(selection.evaluate({"v": np.arange(4, dtype=dtype)}), [False, False, True, True])


def test_evaluating_a_chunk_again_gives_the_same_records():
    # how cheap an evaluation is: bench/selection_speed.py (make bench, scenario 2)
    selection = compile_selection("evt % 7 == 0 && kind != 2 || sqrt(x) > 0.5", STREAM, KINDS)
    first = np.asarray(selection.evaluate(DATA), dtype=bool)
    with np.errstate(invalid="ignore"):  # sqrt of a negative x is nan, which fails the cut
        expected = ((EVT % 7 == 0) & (KIND != 2)) | (np.sqrt(X) > 0.5)
    np.testing.assert_array_equal(first, expected)
    for _ in range(100):
        np.testing.assert_array_equal(selection.evaluate(DATA), first)


# ------------------------------------------------------------------ names


def test_branch_names_that_are_numexpr_functions_are_just_branches():
    kinds = {"sin": "flat", "where": "flat", "abs": "flat", "e": "flat", "pi": "flat"}
    data = {
        "sin": np.array([5.0, 5.0, 5.0]),
        "abs": np.array([1.0, -1.0, 2.0]),
        "where": np.array([2.0, 2.0, 0.0]),
        "e": np.array([1.0, 2.0, 3.0]),
        "pi": np.array([3.0, 3.0, 3.0]),
    }
    assert select("sin(abs) > 0 and where > 1 and sin == 5", data, kinds).tolist() == [True, False, False]
    assert select("e + pi == 4", data, kinds).tolist() == [True, False, False]
    assert select("where(abs > 0, sin, e) == 5", data, kinds).tolist() == [True, False, True]


def test_branch_names_like_synthetic_locals_do_not_collide():
    kinds = {"_b1": "flat", "_b0": "flat", "x": "flat"}
    data = {"x": np.array([1.0, -1.0]), "_b1": np.array([-5.0, 5.0]), "_b0": np.array([0.0, 0.0])}
    assert select("x > 0 and _b1 < 0 and _b0 == 0", data, kinds).tolist() == [True, False]


def test_dotted_branch_name_selects_a_split_member():
    kinds = {"fHits.fX": "flat", "run": "flat"}
    data = {"fHits.fX": np.array([0.5, 2.0, 3.0]), "run": np.array([1, 2, 1])}
    assert compile_selection("fHits.fX > 1", STREAM, kinds).branches == {"fHits.fX"}
    assert select("fHits.fX > 1 && run == 1", data, kinds).tolist() == [False, False, True]
    assert "attribute access" in refused("fHits.fY > 1", kinds)


def test_unknown_branch_suggests_closest_and_lists_branches():
    kinds = {"nhits": "flat", "run": "flat", "snarl": "flat"}
    message = refused("nhit > 3", kinds)
    assert message.startswith(
        "unknown branch 'nhit' in selection for stream DaqSnarl; did you mean 'nhits'? "
        "(branches: nhits, run, snarl)"
    )
    assert message.endswith("\n  nhit > 3\n  ^")


def test_unknown_branch_without_close_match_lists_branches_only():
    message = refused("zzzzzz > 3", {"nhits": "flat", "run": "flat"})
    assert "did you mean" not in message
    assert "(branches: " in message


def test_unknown_branch_suggestion_ignores_case():
    assert "did you mean 'nhits'?" in refused("NHITS > 3")


def test_long_branch_list_is_shortened():
    kinds = {f"branch{i:03d}": "flat" for i in range(100)}
    message = refused("branch1000 > 3", kinds)
    assert message.count("branch") < 30 and ", ...)" in message


def test_function_name_used_as_a_value_is_refused():
    assert "'sqrt' is a function" in refused("sqrt > 1")


# ------------------------------------------------------------------ hostile input


def test_import_os_system_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "X"
    for text in (
        f"__import__('os').system('touch {target}')",
        "__import__('os').system('touch X')",
        "__import__(os).system(x)",
        "[c for c in ().__class__.__base__.__subclasses__()]",
    ):
        with pytest.raises(SelectionError):
            compile_selection(text, STREAM, KINDS)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


_HOSTILE = [
    ("__import__(os)", "unknown function '__import__'"),
    ("x.real > 0", "attribute access"),
    ("evt.__class__", "attribute access"),
    ("__builtins__ > 0", "unknown branch '__builtins__'"),
    ("__class__", "unknown branch '__class__'"),
    ("(lambda: 1)() > 0", "lambda is not allowed"),
    ("lambda: 1", "lambda is not allowed"),
    ("[i for i in x]", "comprehensions are not allowed"),
    ("{i: i for i in x}", "comprehensions are not allowed"),
    ("{i for i in x}", "comprehensions are not allowed"),
    ("sum(i for i in x)", "comprehensions are not allowed"),
    ("x[0] > 1", "indexing"),
    ("hits[-1] > 1", "negative indices are not supported"),
    ("hits[1:] > 1", "an index must be a whole number"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("open(x)", "unknown function 'open'"),
    ("globals()", "unknown function 'globals'"),
    ("x == 'nhits'", "compare a string branch with == or != to a quoted string"),
    ('"a" == "a"', "compare a string branch with == or != to a quoted string"),
    ("x == b'a'", "only plain quoted strings"),
    ("f'{x}' == 1", "only plain quoted strings"),
    ("x == 'unterminated", "unexpected character"),
    ("sqrt(x=1) > 0", "positional arguments only"),
    ("where(x > 0, 1, 0, y=1)", "positional arguments only"),
    ("sqrt(*x) > 0", "'*' unpacking is not allowed"),
    ("(y := 3) > 1", "assignment (':=') is not allowed"),
    ("x if a else y", "write where(c, x, y)"),
    ("evt // 2 > 1", "'//' (floor division) is not supported"),
    ("evt << 1 > 1", "bit shifts ('<<')"),
    ("evt >> 1 > 1", "bit shifts ('>>')"),
    ("evt ^ 2 > 1", "for a power write **"),
    ("evt @ evt", "'@' is not supported"),
    ("evt is 1", "'is' is not allowed"),
    ("evt is not 1", "'is not' is not allowed"),
    ("evt in x", "'in' is not allowed"),
    ("evt not in x", "'not in' is not allowed"),
    ("[1, 2]", "lists, tuples, sets and dicts"),
    ("(1, 2)", "lists, tuples, sets and dicts"),
    ("{1: 2}", "lists, tuples, sets and dicts"),
    ("{x}", "lists, tuples, sets and dicts"),
    ("None", "None is not allowed"),
    ("x == ...", "Ellipsis is not allowed"),
    ("1j > 0", "complex numbers are not allowed"),
    ("1e999 > 0", "number literal too large"),
    ("x > 99999999999999999999", "integer literal out of range"),
    ("sqrt(x, y) > 0", "sqrt() takes 1 argument (2 given)"),
    ("arctan2(x) > 0", "arctan2() takes 2 arguments (1 given)"),
    ("where(x, y) > 0", "where() takes 3 arguments (2 given)"),
    ("sqrt() > 0", "sqrt() takes 1 argument (0 given)"),
    ("evt(3) > 1", "branch 'evt' is not a function"),
    ("x.y(3) > 1", "attribute access"),
    ("(1)(2) > 1", "only these functions can be called"),
    ("x > 1 # comment", "comments ('#') are not allowed"),
    ("x = 1", "'=' is assignment; compare with '=='"),
    ("await x", "'await' is not allowed"),
    ("x > 1; y", "syntax error"),
    ("x > $1", "unexpected character '$'"),
    ("x \u2212 1 > 0", "unexpected character '\u2212'"),
    ("x > 1\x00", "unexpected character '\\x00'"),
    ("", "selection is empty"),
    ("   \n ", "selection is empty"),
]


@pytest.mark.parametrize("text, fragment", _HOSTILE, ids=[case[0] for case in _HOSTILE])
def test_hostile_or_unsupported_text_is_refused_with_a_reason(text, fragment):
    message = refused(text)
    assert fragment in message


def test_selection_error_is_a_value_error():
    assert issubclass(SelectionError, ValueError)


def test_unknown_function_names_it_and_lists_allowed_ones():
    message = refused("foo(x) > 1")
    assert message.startswith("unknown function 'foo' in selection; allowed: abs, arctan2, cos, exp")
    assert "over variable-length branches: all, any, len, max, mean, min, sum" in message


def test_syntax_error_points_at_column_with_caret():
    message = refused("evt % 7 == && x")
    assert message == "syntax error in selection at column 12:\n  evt % 7 == && x\n             ^"


@pytest.mark.parametrize(
    "text, column, detail",
    [
        ("(x > 1", 1, "'(' was never closed"),
        ("x > 1)", 6, "unmatched ')'"),
        ("(x > 1]", 7, "']' does not match '('"),
        ("x +", 4, "unexpected end"),
        ("x > > 1", 5, ""),
        ("x &&& a", 5, ""),
        ("a ! = b", 3, ""),
    ],
)
def test_syntax_errors_report_column(text, column, detail):
    with pytest.raises(SelectionError) as info:
        compile_selection(text, STREAM, KINDS)
    assert info.value.column == column
    assert str(info.value).startswith(f"syntax error in selection at column {column}:")
    assert detail in str(info.value)
    assert str(info.value).endswith("\n  " + " " * (column - 1) + "^")


def test_error_in_multiline_selection_names_line_and_column():
    message = refused("evt > 3 &&\n  nhit > 2")
    assert "unknown branch 'nhit'" in message
    assert message.endswith("\n    nhit > 2\n    ^")
    assert "line 2, column 5" in refused("x > 1 and\n  y $ 2")


def test_multiline_selection_is_accepted():
    assert_selects("evt > 3\n  && evt < 10\r\n  or evt == 0", ((EVT > 3) & (EVT < 10)) | (EVT == 0))


def test_500_deep_parentheses_are_refused_quickly():
    text = "(" * 500 + "x" + ")" * 500
    start = time.perf_counter()
    message = refused(text)
    assert time.perf_counter() - start < 5.0  # not a blow-up; the speed target is in bench/selection_speed.py
    assert f"more than {MAX_DEPTH} levels" in message


@pytest.mark.parametrize(
    "text",
    [
        "-" * (MAX_LENGTH - 1) + "x",
        "~" * (MAX_LENGTH - 1) + "x",
        "not " * (MAX_LENGTH // 4 - 1) + "x",
        "x**" * (MAX_LENGTH // 3 - 1) + "x",
        "x+" * (MAX_LENGTH // 2 - 1) + "x",
        "sqrt(" * 60 + "x" + ")" * 60 + " + x" * 60,
    ],
    ids=["minus", "tilde", "not", "power", "plus", "mixed"],
)
def test_deep_expressions_within_length_limit_are_refused_cleanly(text):
    assert len(text) <= MAX_LENGTH
    start = time.perf_counter()
    message = refused(text)
    assert time.perf_counter() - start < 10.0  # not a blow-up; the speed target is in bench/selection_speed.py
    assert "nested too deeply" in message or "too deeply" in message


def test_expression_at_the_depth_limit_still_compiles():
    text = "(" * (MAX_DEPTH - 2) + "x" + " ** 2)" * (MAX_DEPTH - 2) + " > 0"
    compile_selection(text, STREAM, KINDS)
    compile_selection("!" * (MAX_DEPTH - 1) + "x", STREAM, KINDS)


def test_12000_character_expression_is_refused_before_parsing(monkeypatch):
    text = " + ".join(["x"] * 4000) + " > 0"
    assert len(text) > 12000

    def parsed(*args, **kwargs):
        raise AssertionError("a selection over the length limit was tokenized or parsed")

    monkeypatch.setattr(tokenize, "generate_tokens", parsed)
    monkeypatch.setattr(ast, "parse", parsed)
    message = refused(text)
    assert f"too long: {len(text)} characters (at most {MAX_LENGTH})" in message


def test_too_many_terms_is_refused_at_compile_time():
    text = " or ".join(f"evt == {i}" for i in range(300))
    assert len(text) <= MAX_LENGTH
    assert "too many terms" in refused(text)


def test_many_terms_within_evaluator_limits_compile():
    text = " or ".join(f"evt == {i}" for i in range(100))
    assert_selects(text, EVT < 100)


def test_bad_branch_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="branch kind must be one of"):
        compile_selection("x > 1", STREAM, {"x": "float"})


def test_non_string_selection_is_refused():
    with pytest.raises(SelectionError, match="must be a string"):
        compile_selection(42, STREAM, KINDS)


# ---------------------------------------------------------------- branches of other kinds

TYPED = {
    "name": ak.Array(["muon", "electron", "", "muon", "tau"]),
    "pt": ak.Array([[25.0, 3.0], [], [19.5], [40.0, 21.0, 1.0], [5.0]]),
    "xyz": ak.Array(np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 1], [-1, -2, -3]], dtype=np.int32)),
    "obj": ak.Array([{"a": 1}, {"a": 2}, {"a": 3}, {"a": 4}, {"a": 5}]),
    "n": np.arange(5),
}
TYPED_KINDS = {"name": "string", "pt": "jagged", "xyz": "fixed", "obj": "other", "n": "flat"}


def typed(text):
    return select(text, TYPED, TYPED_KINDS).tolist()


def test_string_branch_compares_with_a_quoted_string_either_way_round():
    assert typed("name == 'muon'") == [True, False, False, True, False]
    assert typed('"muon" != name') == [False, True, True, False, True]
    assert typed("name == ''") == [False, False, True, False, False]
    assert typed("name == 'muon' && n > 0") == [False, False, False, True, False]


def test_string_literal_is_data_not_code():
    assert typed("name == 'x) | (1 == 1'") == [False] * 5
    assert typed("name == '__import__(\"os\")'") == [False] * 5


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("name < 'm'", "compared with == or != only"),
        ("name == name", "to a quoted string"),
        ("name > 1", "compared with == or != only"),
        ("name == 'a' 'b'", "two quoted strings in a row"),
        ("n == 'a'", "compare a string branch"),
        ("len(name) > 1", "holds strings"),
        ("name", "holds strings"),
        ("obj > 1", "holds objects or nested lists"),
        ("sum(obj) > 1", "holds objects"),
        ("obj[0] > 1", "holds objects or nested lists"),
        ("xyz > 1", "a fixed-size array"),
        ("pt[n] > 1", "an index must be a whole number"),
        ("pt[True] > 1", "an index must be a whole number"),
        ("pt[10000000] > 1", "too large"),
    ],
)
def test_selections_other_kinds_cannot_take_are_refused_with_a_reason(text, fragment):
    assert fragment in refused_typed(text)


def refused_typed(text):
    with pytest.raises(SelectionError) as info:
        compile_selection(text, STREAM, TYPED_KINDS)
    return str(info.value)


def test_indexing_by_a_constant_gives_nan_past_the_end():
    assert typed("pt[0] > 20") == [True, False, False, True, False]
    assert typed("pt[1] > 2") == [True, False, False, True, False]
    assert typed("pt[1] != pt[1]") == [False, True, True, False, True]  # NaN where the list is short


def test_fixed_size_arrays_take_reductions_and_indexing():
    data = np.asarray(TYPED["xyz"])
    assert typed("sum(xyz) > 6") == (data.sum(axis=1) > 6).tolist()
    assert typed("max(xyz) >= 6 || xyz[2] == 1") == ((data.max(axis=1) >= 6) | (data[:, 2] == 1)).tolist()
    assert typed("len(xyz) == 3") == [True] * 5


def test_unserved_branch_is_named_with_its_reason():
    with pytest.raises(SelectionError) as info:
        compile_selection("bad > 1", STREAM, {"n": "flat"}, {"bad": "uproot cannot read it: ValueError"})
    assert "branch 'bad' of stream" in str(info.value) and "cannot be served: uproot cannot read it" in str(info.value)
