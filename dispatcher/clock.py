"""Time for code that waits: a clock to read and a waiter to pause, both injected.

A session never calls ``time`` itself. It reads a :class:`Clock` and pauses
through a :class:`Waiter`; the child passes a waiter that watches the client
and the signals while it pauses, the tests pass a :class:`FakeClock`, which is
both, and whose waits advance fake time at once (like Twisted's
``task.Clock``), so a timeout or a delay is tested in milliseconds.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Any, Protocol


class Clock(Protocol):
    """Monotonic time in seconds."""

    def monotonic(self) -> float: ...


class Waiter(Protocol):
    """Pauses a request; ``wait`` may raise ``SessionAbort`` when the session must end."""

    def wait(self, seconds: float) -> None: ...


class SystemClock:
    """The real monotonic clock."""

    def monotonic(self) -> float:
        return time.monotonic()


class Sleeper:
    """A waiter that just sleeps (a process with nothing else to watch)."""

    def wait(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """Fake time for tests: a clock and a waiter whose ``wait`` advances the time instantly.

    ``call_later`` runs a function when the fake time reaches it (during ``advance``
    or ``wait``), so a test can let a file grow in the middle of a request.

    Args:
        start (float): the time it reads at first; default 0.0.
    """

    def __init__(self, start: float = 0.0):
        self.now = start
        self.waited: list[float] = []  # every wait asked for, in order
        self._calls: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._order = itertools.count()  # calls due at the same time run in the order they were made

    def monotonic(self) -> float:
        return self.now

    def wait(self, seconds: float) -> None:
        self.waited.append(seconds)
        self.advance(max(0.0, seconds))

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running the calls that fall due on the way."""
        end = self.now + seconds
        while self._calls and self._calls[0][0] <= end:
            when, _, fn, args = heapq.heappop(self._calls)
            self.now = max(self.now, when)
            fn(*args)
        self.now = end

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` once the time has moved ``delay`` seconds on from now."""
        heapq.heappush(self._calls, (self.now + delay, next(self._order), fn, args))

    @property
    def pending_calls(self) -> int:
        return len(self._calls)
