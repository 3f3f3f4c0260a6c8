"""How fast a selection is compiled, evaluated and refused, in-process (no server).

The unit tests check what a selection does; the speed targets live here, next to
a baseline measured in the same run: numpy evaluating the same cut by hand, and
the compilation of a plain cut. Reported by scenario 2 (selective cut).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dispatcher.selection import MAX_LENGTH, SelectionError, compile_selection

from .common import STREAM, best_of, flat_columns

CUT = "evt % 7 == 0 && kind != 2 || sqrt(x) > 0.5"  # three terms, as in a shift-crew cut
PLAIN_CUT = "evt % 50 == 0"
KINDS = {"evt": "flat", "kind": "flat", "energy": "flat", "nhits": "flat", "x": "flat"}
SMALL_CHUNK = 40  # a trickle from the open file: the per-call cost dominates
CALLS = 100  # evaluations or compilations per timing
DEEP_CALLS = 2  # the deep refusals take tens of milliseconds each

#: expressions that stay within MAX_LENGTH but nest as deep as the text allows
DEEP = {
    "minus": "-" * (MAX_LENGTH - 1) + "x",
    "tilde": "~" * (MAX_LENGTH - 1) + "x",
    "not": "not " * (MAX_LENGTH // 4 - 1) + "x",
    "power": "x**" * (MAX_LENGTH // 3 - 1) + "x",
    "plus": "x+" * (MAX_LENGTH // 2 - 1) + "x",
    "mixed": "sqrt(" * 60 + "x" + ")" * 60 + " + x" * 60,
}
PARENTHESES = "(" * 500 + "x" + ")" * 500
TOO_LONG = " + ".join(["x"] * 4000) + " > 0"


@dataclass(frozen=True)
class Timing:
    """One figure against its baseline, with the target on the figure."""

    name: str
    seconds: float
    baseline: str
    baseline_seconds: float
    target_seconds: float

    @property
    def met(self) -> bool:
        return self.seconds < self.target_seconds


def fmt_short(seconds: float) -> str:
    """A short duration in the unit that keeps it readable: us below a millisecond, else ms."""
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def _per_call(fn, repeat: int, calls: int = CALLS) -> float:
    """Best of ``repeat`` timings of ``calls`` calls, per call."""
    best, _all, _last = best_of(lambda: [fn() for _ in range(calls)], repeat)
    return best / calls


def _refuse(text: str) -> None:
    try:
        compile_selection(text, STREAM, KINDS)
    except SelectionError:
        return
    raise RuntimeError(f"selection of {len(text)} characters was accepted; it must be refused")


def measure(repeat: int = 5) -> list[Timing]:
    """Time evaluation of a small chunk and the refusal of hostile selections.

    Args:
        repeat (int): timings per figure, the best is kept; default 5.
    """
    cols = flat_columns(0, SMALL_CHUNK)
    selection = compile_selection(CUT, STREAM, KINDS)
    evt, kind, x = cols["evt"], cols["kind"], cols["x"]
    expected = ((evt % 7 == 0) & (kind != 2)) | (np.sqrt(x) > 0.5)
    if not np.array_equal(np.asarray(selection.evaluate(cols), dtype=bool), expected):
        raise RuntimeError(f"{CUT!r} selected other records than numpy")
    evaluate = _per_call(lambda: selection.evaluate(cols), repeat)
    by_hand = _per_call(lambda: ((evt % 7 == 0) & (kind != 2)) | (np.sqrt(x) > 0.5), repeat)

    plain = _per_call(lambda: compile_selection(PLAIN_CUT, STREAM, KINDS), repeat)
    compile_plain = f"compile {PLAIN_CUT!r} {fmt_short(plain)}"
    deepest = max(_per_call(lambda text=text: _refuse(text), repeat, DEEP_CALLS) for text in DEEP.values())
    return [
        Timing(f"evaluate a three-term cut on {SMALL_CHUNK} records", evaluate, f"numpy by hand {fmt_short(by_hand)}",
               by_hand, 0.002),
        Timing("refuse 500-deep parentheses", _per_call(lambda: _refuse(PARENTHESES), repeat), compile_plain,
               plain, 0.1),
        Timing(f"refuse the deepest of {len(DEEP)} expressions within {MAX_LENGTH} characters", deepest,
               compile_plain, plain, 0.5),
        Timing(f"refuse {len(TOO_LONG):,} characters (before parsing)", _per_call(lambda: _refuse(TOO_LONG), repeat),
               compile_plain, plain, 0.01),
    ]
