"""A time budget for one call into uproot: some streamed objects take uproot minutes per entry,
and a child busy that long answers no one. ``within(seconds, work)`` interrupts ``work`` with a
SIGALRM timer (main thread only; elsewhere it just runs) and raises :class:`Expired`."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: how long uproot may take to read one branch: beyond it the branch is not served in that file
#: (with the reason), the others are
BRANCH_SECONDS = 5.0
#: and per entry of the chunk read, on top
BRANCH_SECONDS_PER_ENTRY = 0.002


class Expired(Exception):
    """The budget ran out."""


def _expire(signum: int, frame: Any) -> None:
    raise Expired()


def branch_budget(entries: int) -> float:
    """Seconds one branch may take to read ``entries`` entries."""
    return BRANCH_SECONDS + BRANCH_SECONDS_PER_ENTRY * entries


def within(seconds: float, work: Callable[[], T]) -> T:
    """``work()``, interrupted after ``seconds`` with :class:`Expired`."""
    if threading.current_thread() is not threading.main_thread():
        return work()
    old = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return work()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
