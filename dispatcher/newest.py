"""Delivery of the newest record (keep-up ``record``): what is newest when asked, older records skipped.

Each request jumps to the newest file and reads each stream backwards from its
end, in growing steps, until it finds passing records newer than the last one
served. Streams take turns, so a busy stream does not starve a quiet one.
"""

from __future__ import annotations

import logging

import awkward as ak
import numpy as np

from . import reader as stream_reader
from .catalog import NoFileError
from .columnar import Part
from .delivery import Delivery
from .layouts import SetLayout, SetsLayout
from .position import FilePosition
from .reader import StreamReader, fitting
from .tail import FileReader

log = logging.getLogger("dds.session")

#: entries read back from the end at first; the step doubles while nothing passes
FIRST_STEP = 1000
#: files jumped over at once whose passing records are counted as skipped, at most
MAX_SKIPPED_FILES = 32


class Newest(Delivery):
    """Serve the newest passing records not yet served, one stream at a time (see :class:`Delivery`)."""

    def __init__(self, position: FilePosition, reader: StreamReader):
        super().__init__(position, reader)
        self._rr = 0  # the stream whose turn it is
        self.skipped: dict[str, int] = {}  # stream -> passing records skipped since its last part

    def next_set(self, deadline: float) -> tuple[list[Part], SetsLayout]:
        """The newest passing record as a record set of one."""
        parts = self.batch(deadline, 1)
        return parts, SetsLayout((SetLayout(parts[0].file, ((0, 0),), ()),))

    def batch(self, deadline: float, n: int) -> list[Part]:
        """The newest passing records not yet served (up to n), of one stream."""
        position = self.position
        while True:
            newest = position.catalog.open_file()
            if newest is not None and (position.file is None or newest > position.file):
                self._count_left_behind(newest)
                position.enter(newest)
            else:
                position.refresh()
            if position.reader is not None:
                order = list(self.reader.streams)
                for i in range(len(order)):
                    s = order[(self._rr + i) % len(order)]
                    part = self._scan_back(s, n)
                    if part is not None:
                        self._rr = (self._rr + i + 1) % len(order)
                        return [part]
            position.wait(deadline, position.no_record_text())

    def _scan_back(self, stream: str, n: int) -> Part | None:
        """Up to n newest passing entries of ``stream`` after its cursor, reading backwards."""
        total = self.reader.num_entries(stream)
        st = self.reader.streams[stream]
        if total is None or total <= st.cursor:
            return None
        st.pending.clear()
        hi, floor = total, st.cursor
        skipped = 0
        found_e: list[np.ndarray] = []
        found_a: list[ak.Array] = []
        got = 0
        step = max(n, FIRST_STEP)
        while hi > floor and got < n:
            lo = max(floor, hi - step)
            st.cursor = lo
            while st.cursor < hi:
                if not self.reader.read_chunk(stream, hi - st.cursor, limit=hi):
                    st.pending.clear()
                    return None
            if st.pending:
                entries = np.concatenate([c.entries for c in st.pending])
                arrays = ak.concatenate([c.arrays for c in st.pending]) if len(st.pending) > 1 else st.pending[0].arrays
                st.pending.clear()
                k = min(n - got, len(entries))
                skipped += len(entries) - k
                found_e.insert(0, entries[len(entries) - k :])
                found_a.insert(0, arrays[len(entries) - k :])
                got += k
            hi = lo
            step *= 2
        st.seek(total)  # older records are skipped for good
        if got and hi > floor:
            skipped += self.reader.count_passing(stream, floor, hi)
        self.skipped[stream] = self.skipped.get(stream, 0) + skipped
        if not got:
            return None
        entries = np.concatenate(found_e)
        arrays = found_a[0] if len(found_a) == 1 else ak.concatenate(found_a)
        keep = fitting(arrays[::-1], stream_reader.MAX_REPLY_BYTES)  # the newest ones, if not all fit in one reply
        if keep < len(entries):
            entries, arrays = entries[len(entries) - keep :], arrays[len(entries) - keep :]
        return Part(stream, self.position.file or "", entries, arrays, self.reader.unserved(stream))

    def _count_left_behind(self, newest: str) -> None:
        """Count, as skipped, the passing records not served of the current file and of the files
        between it and ``newest`` (at most MAX_SKIPPED_FILES of them are looked into)."""
        position = self.position
        if position.file is None:
            return
        for s, st in self.reader.streams.items():
            total = self.reader.num_entries(s)
            if total is not None and total > st.cursor:
                self.skipped[s] = self.skipped.get(s, 0) + self.reader.count_passing(s, st.cursor, total)
        between = [f for f in position.catalog.files() if position.file < f < newest]
        if len(between) > MAX_SKIPPED_FILES:
            log.debug("records of %d files jumped over are not counted as skipped", len(between) - MAX_SKIPPED_FILES)
            between = between[-MAX_SKIPPED_FILES:]
        for name in between:
            try:
                r = FileReader(position.catalog.path(name))
            except NoFileError as exc:  # deleted since the listing: nothing known to count
                log.debug("file %s jumped over, its records not counted as skipped: %s", name, exc)
                continue
            try:
                r.refresh()
                for s in self.reader.streams:
                    if s in r.trees:
                        n = self.reader.count_passing(s, 0, r.trees[s].num_entries, reader=r)
                        self.skipped[s] = self.skipped.get(s, 0) + n
            except Exception as exc:  # gone or unreadable: nothing known to count
                log.debug("file %s jumped over, its records not counted as skipped: %s", name, exc)
            finally:
                r.close()
