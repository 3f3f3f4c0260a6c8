"""How fresh what a child serves is: lag in records, age in seconds, records skipped.

- :class:`Growth`: when each entry of one open data file was first seen. The tail
  reader notes the streams' lengths each time it (re)opens the file: entries
  present at the first look get the file's modification time (the last write,
  the best the server knows of them), entries that appear later the time they
  were first seen.
- :class:`LaterFiles`: records per stream in the data files after a given one,
  for lag. Counts of a file are cached by its (size, mtime); the whole sum is
  recomputed at most every ``REFRESH_SECONDS`` unless the file list changed, so
  a client reading the open file pays one ``stat`` of the directory per reply.
- :func:`annotate`: fills the freshness fields of the parts of a reply.

Lag of a part is the records of its stream written after its last record: the
rest of its file as last seen, plus every later file. Age is the seconds since
its records were first seen, sent as ``[[entry, seconds], ...]`` steps: each
pair gives the age of the records up to and including that entry (so prefetched
sets each get their own age).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .catalog import NoFileError

if TYPE_CHECKING:
    from .catalog import Catalog
    from .columnar import Part
    from .position import FilePosition

#: most [entry, seconds] steps sent per part; older rows take the first step's age
MAX_AGE_STEPS = 64
#: growth steps remembered per stream of an open file (older ones merge into the next)
MAX_GROWTH_STEPS = 4096


class Growth:
    """When the entries of one file's streams were first seen (wall-clock seconds)."""

    __slots__ = ("counts", "times")

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}  # stream -> lengths seen, ascending
        self.times: dict[str, list[float]] = {}  # stream -> when each length was first seen

    def note(self, lengths: dict[str, int], mtime: float, now: float) -> None:
        """The file shows these stream lengths; ``mtime`` is its modification time."""
        for stream, n in lengths.items():
            counts = self.counts.setdefault(stream, [])
            times = self.times.setdefault(stream, [])
            if counts and n <= counts[-1]:
                continue
            counts.append(n)
            # the first look: the last write is the best guess for what was there already
            times.append(min(mtime, now) if len(counts) == 1 else now)
            if len(counts) > MAX_GROWTH_STEPS:
                del counts[0], times[0]

    def written(self, stream: str, entry: int) -> float | None:
        """When ``entry`` of ``stream`` was first seen (None: not seen)."""
        counts = self.counts.get(stream)
        if not counts:
            return None
        i = bisect.bisect_right(counts, entry)
        return self.times[stream][min(i, len(counts) - 1)]

    def age_steps(self, stream: str, entries: Any, now: float) -> list[list]:
        """``[[entry, seconds], ...]`` for the entries of a part (ascending), at most MAX_AGE_STEPS."""
        counts = self.counts.get(stream)
        if not counts or not len(entries):
            return []
        times = self.times[stream]
        first, last = int(entries[0]), int(entries[-1])
        lo = min(bisect.bisect_right(counts, first), len(counts) - 1)
        hi = min(bisect.bisect_right(counts, last), len(counts) - 1)
        steps = [[min(counts[i] - 1, last), round(max(0.0, now - times[i]), 6)] for i in range(lo, hi + 1)]
        steps[-1][0] = last
        return steps[-MAX_AGE_STEPS:]


def _lengths(path: str) -> dict[str, int]:
    from .tail import FileReader

    r = FileReader(path)
    try:
        r.refresh()
        return {s: info.num_entries for s, info in r.trees.items()}
    finally:
        r.close()


class LaterFiles:
    """Records per stream in the data files after a given one.

    Args:
        catalog (Catalog): the data directory.
        lengths (callable): stream lengths of a file by path (tests give a fake).
    """

    REFRESH_SECONDS = 0.5
    #: files opened per call at most, so a first reply far behind is not held up (the rest count later)
    MAX_OPENS = 16

    def __init__(self, catalog: Catalog, lengths: Callable[[str], dict[str, int]] = _lengths):
        self.catalog = catalog
        self.lengths = lengths
        self._cache: dict[str, tuple[tuple, dict[str, int]]] = {}
        self._key: tuple = ()
        self._at = -1e9
        self._total: dict[str, int] = {}

    def after(self, file: str) -> dict[str, int]:
        """``{stream: records}`` in every data file that sorts after ``file``."""
        from .tail import signature  # tail imports this module

        later = tuple(f for f in self.catalog.files() if f > file)
        now = time.monotonic()
        if not later:
            return {}
        if later == self._key and now - self._at < self.REFRESH_SECONDS:
            return self._total
        total: dict[str, int] = {}
        opens = 0
        for name in later:
            try:
                path = self.catalog.path(name)
                sig = signature(path)  # an XRootD data directory too
            except (NoFileError, OSError):  # gone since the listing, or the server away: counted later
                continue
            cached = self._cache.get(name)
            if cached is None or cached[0] != sig:
                if opens >= self.MAX_OPENS:
                    continue
                opens += 1
                try:
                    cached = (sig, self.lengths(path))
                except Exception:  # unreadable now (being created): counted on a later reply
                    continue
                self._cache[name] = cached
            for s, n in cached[1].items():
                total[s] = total.get(s, 0) + n
        for name in [n for n in self._cache if n not in later]:
            del self._cache[name]
        self._key, self._at, self._total = later, now, total
        return total


def annotate(parts: list[Part], position: FilePosition, later: LaterFiles, skipped: dict[str, int] | None = None,
             now: float | None = None) -> None:
    """Fill ``lag``, ``age`` and (record mode: ``skipped`` given) ``skipped`` of each part, as known now."""
    now = time.time() if now is None else now
    reader = position.reader
    after: dict[str, dict[str, int]] = {}  # the later files of each part's file, counted once per reply
    for p in parts:
        if not len(p.entries):
            continue
        if reader is None or reader.name != p.file:
            continue  # the file is gone: nothing is known of it any more
        info = reader.trees.get(p.stream)
        total = info.num_entries if info is not None else 0
        rest = max(0, total - int(p.entries[-1]) - 1)
        if p.file not in after:
            after[p.file] = later.after(p.file)
        p.lag = rest + after[p.file].get(p.stream, 0)
        p.age = reader.growth.age_steps(p.stream, p.entries, now)
        if skipped is not None:
            p.skipped = skipped.pop(p.stream, 0)
