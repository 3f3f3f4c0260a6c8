"""Simple cuts run in numpy and give exactly what numexpr gives; the rest stays with numexpr."""

from __future__ import annotations

import numpy as np
import pytest

from dispatcher import selection
from dispatcher.fastcut import plan
from dispatcher.selection import compile_selection

rng = np.random.default_rng(7)
N = 5000
COLUMNS = {
    "i32": rng.integers(-50, 50, N).astype(np.int32),
    "i64": rng.integers(-(2**62), 2**62, N),
    "f32": rng.normal(0, 3, N).astype(np.float32),
    "f64": np.where(rng.random(N) < 0.01, np.nan, rng.normal(0, 3, N)),
    "u8": rng.integers(0, 255, N).astype(np.uint8),
    "ok": rng.random(N) < 0.5,
    "u64": rng.integers(0, 2**63, N, dtype=np.uint64) * np.uint64(2),
}
KINDS = {k: "flat" for k in COLUMNS}
SIMPLE = ["i32 > 3", "i32 == 3.5", "f32 > 0.1", "f32 == 0.1", "0.3 < f64", "f64 >= -0.0", "i64 > 1e18",
          "i64 > 4611686018427387904", "u8 != 200", "ok", "!ok && f32 < 1", "u64 > 9223372036854775807",
          "(i32 > 0) || (f64 < -1) and !(u8 > 100)", "i32 > 3000000000", "f32 > 1e300",
          "i32 % 7 == 0", "i64 % -3 == -1", "1 < u8 % 5", "i32 % 7 == 0.5"]
NOT_SIMPLE = ["f64 % 2 == 0", "i32 % 0 == 0", "i32 % 2.5 == 0", "f64 != f64", "abs(f32) > 2", "i32 + 1 > 3"]


@pytest.mark.parametrize("text", SIMPLE + NOT_SIMPLE)
def test_a_cut_passes_the_same_records_in_numpy_as_in_numexpr(text, monkeypatch):
    sel = compile_selection(text, "S", KINDS)
    assert (plan(sel._expression) is not None) == (text in SIMPLE or text == "f64 % 2 == 0")
    if text == "f64 % 2 == 0":  # planned, but a float column is left to numexpr when it comes
        assert plan(sel._expression)(COLUMNS) is None
    fast = sel.evaluate(COLUMNS)
    monkeypatch.setattr(selection, "plan", lambda expression: None)
    assert np.array_equal(fast, sel.evaluate(COLUMNS))
