"""Pause writing while the output disk is fuller than a threshold (HERA-B's robot kept the disk from filling)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable

log = logging.getLogger("ddslogger")


class DiskGuard:
    """Waits while the disk holding ``path`` is at least ``max_percent`` full.

    Args:
        path (str): a path on the disk to watch.
        max_percent (float | None): the threshold in percent; None never pauses.
        usage (callable): ``shutil.disk_usage``-like probe; tests give a fake one.
        sleep (callable): the wait between looks; default ``time.sleep``.
        interval (float): seconds between looks while paused; default 1.
    """

    def __init__(self, path: str, max_percent: float | None, usage: Callable = shutil.disk_usage,
                 sleep: Callable[[float], None] = time.sleep, interval: float = 1.0):
        self.path = path
        self.max_percent = max_percent
        self.usage = usage
        self.sleep = sleep
        self.interval = interval
        self.pauses = 0

    def percent(self) -> float:
        u = self.usage(self.path)
        return 100.0 * u.used / u.total if u.total else 0.0

    def wait(self, stopping: Callable[[], bool]) -> None:
        """Return at once when there is room; else warn, and wait until there is (or ``stopping()``)."""
        if self.max_percent is None:
            return
        used = self.percent()
        if used < self.max_percent:
            return
        self.pauses += 1
        log.warning("disk of %s is %.1f%% full (--max-disk-percent %g): writing paused until it is below",
                    self.path, used, self.max_percent)
        while not stopping():
            self.sleep(self.interval)
            used = self.percent()
            if used < self.max_percent:
                log.warning("disk of %s is %.1f%% full: writing resumes", self.path, used)
                return
