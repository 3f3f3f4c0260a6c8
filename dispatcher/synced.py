"""Synced delivery (event building): per value of the sync branch, the record of each stream that has it.

The smallest sync value pending in any stream makes the next set. A stream with
nothing pending may still bring that value while the open file grows: the set
waits for it up to ``max_sync_delay`` seconds (by the session's clock), or until
the file is closed and read to its end; then the stream is named missing.

Sync values are expected to ascend within a file; when they do not, sets are
still built head by head (each set takes the smallest value pending now), so
every record is served once. A NaN sync value equals nothing, not even another
NaN: its record makes a set of its own, with every other stream missing.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from .columnar import Part
from .delivery import Delivery
from .layouts import SetLayout, SetsLayout, SyncBatchLayout
from .reader import sync_branch

#: synced sets per batch at most (each set's row numbers travel in the JSON header)
MAX_SYNC_BATCH = 100_000
#: sets built between checks of the deadline
SKIP_CHECK = 256


class Candidate:
    """The next synced set: its sync value, its members, the streams missing from it, and
    (``waiting``) the missing streams with nothing pending, which a growing file may still bring."""

    __slots__ = ("value", "members", "missing", "waiting")

    def __init__(self, value: Any, members: list[str], missing: list[str], waiting: list[str]):
        self.value = value
        self.members = members
        self.missing = missing
        self.waiting = waiting


class Synced(Delivery):
    """Serve synced record sets of the subscribed streams (see :class:`Delivery`)."""

    def next_set(self, deadline: float) -> tuple[list[Part], SetsLayout]:
        """One synced record set: a part per member stream."""
        c = self._ready(deadline)
        parts = [self.reader.take(s, 1) for s in c.members]
        members = tuple((i, 0) for i in range(len(parts)))
        return parts, SetsLayout((SetLayout(self.position.file or "", members, tuple(c.missing)),))

    def batch(self, deadline: float, max_records: int) -> tuple[list[Part], SyncBatchLayout]:
        """Up to max_records synced sets of one file: one part per stream and each set's row in it
        (fewer if they would make a reply over reader.MAX_REPLY_BYTES)."""
        max_records = min(max_records, MAX_SYNC_BATCH)
        streams = list(self.reader.streams)
        rows: dict[str, list[int]] = {s: [] for s in streams}
        taken: dict[str, list[tuple[Part, np.ndarray]]] = {s: [] for s in streams}
        nsets = 0
        file = ""
        while nsets < max_records:
            if nsets == 0:
                c = self._ready(deadline)
                file = self.position.file or ""
            else:
                if nsets % SKIP_CHECK == 0 and self.position.clock.monotonic() >= deadline:
                    break  # what is built so far is the answer
                # more sets only if they are ready now: a batch is returned as soon as it has one
                self.reader.fill()
                ready = self._ready_now()
                if ready is None:
                    break
                c = ready
            for s in c.members:
                taken[s].append(self.reader.take_ks(s, 1))
                rows[s].append(nsets)
            nsets += 1
        parts, kss, sets = [], [], []
        for s in streams:
            if taken[s]:
                ps = [p for p, _ in taken[s]]
                entries = np.concatenate([p.entries for p in ps])
                parts.append(Part(s, file, entries, ak.concatenate([p.arrays for p in ps]), ps[0].unserved))
                kss.append(np.concatenate([k for _, k in taken[s]]))
                sets.append(np.asarray(rows[s], dtype=np.int64))
        kept, nsets = self.reader.fit_sets(parts, kss, sets, nsets)
        out, positions = [], {}
        for p, r, k in zip(parts, sets, kept):
            if k:
                short = Part(p.stream, p.file, p.entries[:k], p.arrays[:k], p.unserved)
                out.append(p if k == len(p.entries) else short)
                positions[p.stream] = [int(x) for x in r[:k]]
        return out, SyncBatchLayout(nsets, positions)

    def _ready(self, deadline: float) -> Candidate:
        """Wait for the next synced set."""
        position, clock = self.position, self.position.clock
        sub = self.reader.subscription
        first_seen: dict[Any, float] = {}
        while True:
            self.reader.fill()
            c = self._candidate()
            if c is not None:
                if not c.waiting:
                    return c
                if position.read_to_end_if_closed():
                    continue
                if position.reader is None or not position.is_open():
                    return c
                t0 = first_seen.setdefault(c.value, clock.monotonic())
                if clock.monotonic() - t0 >= sub.max_sync_delay:
                    return c
            elif position.move_on(sub.keep_up):
                continue
            position.wait(deadline, position.no_record_text())

    def _ready_now(self) -> Candidate | None:
        """The next synced set if it is ready without waiting."""
        c = self._candidate()
        if c is None:
            return None
        if c.waiting:
            if self.position.read_to_end_if_closed():
                self.reader.fill()
                return self._ready_now()
            if self.position.reader is not None and self.position.is_open():
                return None
        return c

    def _candidate(self) -> Candidate | None:
        """The smallest sync value pending (None: nothing pending)."""
        sync = sync_branch(self.reader.subscription)
        streams = self.reader.streams
        heads = {}
        for s, st in streams.items():
            if st.pending:
                chunk = st.pending[0]
                heads[s] = chunk.arrays[sync][chunk.pos]
        if not heads:
            return None
        # A NaN equals nothing, itself included: such a record makes a set of its own (the other
        # streams named missing), in stream order, so nothing ever waits or loops on it.
        for s, v in heads.items():
            if v != v:
                return Candidate(v, [s], [o for o in streams if o != s], [])
        v = min(heads.values())
        members = [s for s in streams if s in heads and heads[s] == v]
        missing = [s for s in streams if s not in members]
        return Candidate(v, members, missing, [s for s in missing if s not in heads])
