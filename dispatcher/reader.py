"""Reading the subscribed streams of the current file: cut, prescale, chunks, and what waits to be served.

Per stream, a :class:`StreamCursor` holds the next entry to read (``cursor``),
the entry just after the last record served (``served``), and in between the
records read that passed the cut (and prescale), not yet served (``pending``).
:class:`StreamReader` reads chunks into ``pending`` and takes records out of it.
This is the one place that reads data through the tailer (``tail.FileReader``)
and knows its branch kinds.
"""

from __future__ import annotations

import bisect
import collections
import logging
from typing import Any

import awkward as ak
import numpy as np

from .columnar import Part
from .position import FilePosition
from .protocol import MessageType
from .selection import Selection, SelectionError, compile_selection
from .session_errors import SessionError
from .subscription import KeepUp, Subscription
from .suggest import did_you_mean
from .tail import FileGone, FileReader, TreeInfo, Unreadable

log = logging.getLogger("dds.session")

#: entries read per chunk (aligned up to a basket boundary when one is near)
CHUNK_ENTRIES = 50_000
#: the first chunk of a stream: a DAQ file has one small basket per append (~10 records), and
#: uproot pays ~40 us per basket and branch, so a first record is fast only if the first read is
#: short (the first reply of ``next`` holds at most this many sets: see InOrder.next)
FIRST_CHUNK = 32
#: a reply's record data stays under this many bytes (a single record larger than that goes alone):
#: well below what a client accepts (protocol.SERVER_MAX_BODY), and what one reply costs in memory
MAX_REPLY_BYTES = 64 * 1024 * 1024


def fitting(arrays: ak.Array, budget: int) -> int:
    """How many leading records of ``arrays`` fit in ``budget`` bytes on the wire (at least 1)."""
    n = len(arrays)
    if arrays.nbytes + 8 * n <= budget:  # an upper bound: a slice counts its whole buffers
        return n
    k, size = n, ak.to_packed(arrays).nbytes + 8 * n
    while size > budget and k > 1:
        k = max(1, min(k - 1, int(k * budget / size)))
        size = ak.to_packed(arrays[:k]).nbytes + 8 * k
    return k


def compile_cut(text: str, stream: str, kinds: dict, unserved: dict | None = None) -> Selection:
    """The compiled selection ``text`` for ``stream``; SessionError BAD_SELECTION if it does not fit."""
    try:
        return compile_selection(text, stream, kinds, unserved)
    except SelectionError as exc:
        raise SessionError(MessageType.BAD_SELECTION, str(exc)) from None


def sync_branch(sub: Subscription) -> str | None:
    """The branch ``sub`` builds record sets on (None: no sync)."""
    return sub.sync if isinstance(sub.sync, str) else None


def check_stream(sub: Subscription, stream: str, info: TreeInfo) -> None:
    """Refuse what ``sub`` asks of ``stream`` that a file showing it as ``info`` cannot give."""
    sync = sync_branch(sub)
    for b in sub.branches_for(stream) or ():
        if b in info.unserved:
            raise SessionError(
                MessageType.BAD_SUBSCRIPTION,
                f"branch {b!r} of stream {stream} cannot be served: {info.unserved[b]}",
            )
        if b not in info.kinds:
            raise SessionError(
                MessageType.BAD_SUBSCRIPTION,
                f"unknown branch {b!r} in branches for stream {stream}; "
                + did_you_mean(b, info.kinds, kind="branches"),
            )
    if sync and sync in info.unserved:
        raise SessionError(
            MessageType.BAD_SUBSCRIPTION,
            f"sync branch {sync!r} of stream {stream} cannot be served: {info.unserved[sync]}",
        )
    if sync and sync not in info.kinds:
        raise SessionError(
            MessageType.BAD_SUBSCRIPTION,
            f"sync branch {sync!r} is not in stream {stream}; " + did_you_mean(sync, info.kinds, kind="branches"),
        )
    if sync and info.kinds[sync] != "flat":
        raise SessionError(MessageType.BAD_SUBSCRIPTION, f"sync branch {sync!r} of stream {stream} is not a number")
    text = sub.selection_for(stream)
    if text:
        compile_cut(text, stream, info.kinds, info.unserved)


def no_fields(n: int) -> ak.Array:
    """``n`` records without fields (``arrays[[]]`` would select no records, not no fields)."""
    return ak.Array(ak.contents.RecordArray([], [], length=n))


class Chunk:
    """Records of one read that passed the cut (and prescale), not yet served from ``pos`` on."""

    __slots__ = ("entries", "arrays", "pos", "ks")

    def __init__(self, entries: np.ndarray, arrays: ak.Array, ks: np.ndarray):
        self.entries = entries
        self.arrays = arrays
        self.ks = ks  # each record's index among the stream's passing records (prescale phase)
        self.pos = 0


class StreamCursor:
    """One stream's position in the current file.

    ``served`` is just after the last record served (what a new cut starts from),
    ``cursor`` just after the last entry read; in between, ``pending`` holds the
    records that passed the cut. ``passed``/``served_passed`` count the records
    that passed the cut before ``cursor``/``served`` (the prescale phase).
    """

    __slots__ = ("cursor", "pending", "passed", "chunk", "served", "served_passed")

    def __init__(self, cursor: int = 0):
        self.chunk = FIRST_CHUNK  # grows to CHUNK_ENTRIES: a first record comes fast, bulk reads are big
        self.pending: collections.deque[Chunk] = collections.deque()
        self.passed = self.served_passed = 0
        self.cursor = self.served = cursor

    def seek(self, entry: int) -> None:
        """Continue at ``entry``; the prescale phase carries on."""
        self.rewind(entry, self.passed)

    def pending_count(self) -> int:
        return sum(len(c.entries) - c.pos for c in self.pending)

    def head_entry(self) -> int:
        """The entry of the first pending record (there must be one)."""
        c = self.pending[0]
        return int(c.entries[c.pos])

    def rewind(self, entry: int, passed: int) -> None:
        """Read again from ``entry``, before which ``passed`` records passed the cut."""
        self.cursor = self.served = entry
        self.passed = self.served_passed = passed
        self.pending.clear()

    def rewind_unserved(self) -> None:
        """Forget what was read ahead: read again from just after the last record served."""
        self.rewind(self.served, self.served_passed)


class StreamReader:
    """The subscribed streams of one session, read from the position's current file.

    Args:
        position (FilePosition): the current file and its tail reader.
    """

    def __init__(self, position: FilePosition):
        self.position = position
        self.sub: Subscription | None = None
        self.streams: dict[str, StreamCursor] = {}
        self._selections: dict[Any, Selection] = {}
        self.first_reply = False

    def use(self, sub: Subscription | None, streams: dict[str, StreamCursor]) -> None:
        """Serve ``sub`` from these stream positions on."""
        self.sub = sub
        self.streams = streams
        self._selections = {}
        self.first_reply = True  # the next ``next`` is the first of this subscription (see InOrder.next)

    @property
    def subscription(self) -> Subscription:
        if self.sub is None:
            raise SessionError(MessageType.BAD_SUBSCRIPTION, "no subscription yet: call subscribe() first")
        return self.sub

    def seek_all(self, entry: int) -> None:
        for st in self.streams.values():
            st.seek(entry)

    def seek_to_end(self) -> None:
        """Skip every record the current file holds now (start="latest")."""
        reader = self.position.reader
        if reader is None:
            return
        for s, st in self.streams.items():
            info = reader.trees.get(s)
            st.seek(info.num_entries if info else 0)

    def num_entries(self, stream: str) -> int | None:
        """Entries of ``stream`` in the current file as last seen (None: no file, or not in it)."""
        reader = self.position.reader
        info = reader.trees.get(stream) if reader is not None else None
        return info.num_entries if info is not None else None

    # ------------------------------------------------------------------ reading

    def _selection(self, stream: str, info: TreeInfo) -> Selection | None:
        text = self.subscription.selection_for(stream)
        if not text:
            return None
        key = (stream, tuple(sorted(info.kinds.items())))
        sel = self._selections.get(key)
        if sel is None:
            sel = self._selections[key] = compile_cut(text, stream, info.kinds, info.unserved)
        return sel

    def _fields(self, stream: str, info: TreeInfo) -> list[str]:
        wanted = self.subscription.branches_for(stream)
        if wanted is None:
            return list(info.kinds)
        return [b for b in wanted if b in info.kinds]

    def read_chunk(self, stream: str, want: int = 1, limit: int | None = None) -> bool:
        """Read the next chunk of ``stream`` (up to entry ``limit``) into pending.

        False when nothing is left to read now."""
        reader = self.position.reader
        if reader is None:
            return False
        sub = self.subscription
        sync = sync_branch(sub)
        info = reader.trees.get(stream)
        st = self.streams[stream]
        n = info.num_entries if info is not None else 0
        if limit is not None:
            n = min(n, limit)
        if st.cursor >= n or info is None:
            return False
        start = st.cursor
        stop = self._chunk_stop(reader, stream, start, max(want, st.chunk), n)
        st.chunk = min(2 * st.chunk, CHUNK_ENTRIES)
        sel = self._selection(stream, info)
        fields = self._fields(stream, info)
        needed = set(fields)
        if sel is not None:
            needed |= sel.branches
        if sync:
            needed.add(sync)
        try:
            # no branch wanted (an empty branch list, or none of it in this file): nothing to read
            arrays = reader.read(stream, needed, start, stop) if needed else no_fields(stop - start)
        except (FileGone, Unreadable) as exc:
            self.position.read_failed(stream, exc)
            return False
        lost = needed.difference(arrays.fields)
        if lost:  # branches this file cannot serve after all (the reader logged them)
            used = sorted(lost & {*(sel.branches if sel is not None else ()), sync})  # what the cut or sync needs
            if used:
                why = "; ".join(f"{b}: {info.unserved.get(b, 'unreadable')}" for b in used)
                raise SessionError(
                    MessageType.BAD_SELECTION,
                    f"stream {stream} in file {reader.name} cannot serve what the subscription needs ({why})",
                )
            fields = [f for f in fields if f not in lost]
        self.position.read_failures = 0
        entries = np.arange(start, stop, dtype=np.int64)
        if sel is not None:
            # the entries come first, so a constant cut ("1") knows the chunk's length
            mask = sel.evaluate({"": entries, **{name: arrays[name] for name in sel.branches}})
            entries = entries[mask]
            arrays = arrays[mask]
        ks = st.passed + np.arange(len(entries), dtype=np.int64)
        st.passed += len(entries)
        if sub.prescale > 1 and len(entries) and sub.keep_up is not KeepUp.RECORD:
            keep = ks % sub.prescale == 0
            entries, arrays, ks = entries[keep], arrays[keep], ks[keep]
        st.cursor = stop
        if len(entries):
            out = fields + ([sync] if sync and sync not in fields else [])
            kept = arrays[out] if out else no_fields(len(entries))
            if len(entries) < stop - start:
                # a masked chunk is a lazy view of every row read: pack it now, while it is in cache,
                # so that serving copies only what passed (ak.concatenate of views copies every row)
                kept = ak.to_packed(kept)
            st.pending.append(Chunk(entries, kept, ks))
        return True

    @staticmethod
    def _chunk_stop(reader: FileReader, stream: str, start: int, target: int, n: int) -> int:
        stop = min(n, start + target)
        if stop == n:
            return n
        # Align to a basket boundary when one is near, so no basket is decompressed twice. The basket
        # holding ``stop`` is decompressed whole anyway, so a small first chunk also reads to its end.
        offsets = reader.offsets(stream)  # ascending; a followed file's grows by a basket per append
        i = bisect.bisect_left(offsets, stop)
        if i < len(offsets) and offsets[i] - start <= 4 * max(target, CHUNK_ENTRIES):
            return offsets[i]
        return stop

    def fill(self) -> bool:
        """Make every stream have pending records or nothing left to read. True if any has some."""
        for s, st in self.streams.items():
            while not st.pending and self.read_chunk(s):
                pass
        return any(st.pending for st in self.streams.values())

    def count_passing(self, stream: str, lo: int, hi: int, reader: FileReader | None = None) -> int:
        """How many entries of ``stream`` in ``[lo, hi)`` pass the cut (no prescale), reading only the
        cut's branches; of the current file, or of ``reader``'s. 0 when they cannot be read."""
        reader = reader if reader is not None else self.position.reader
        info = reader.trees.get(stream) if reader is not None else None
        if reader is None or info is None or hi <= lo:
            return 0
        hi = min(hi, info.num_entries)
        try:
            sel = self._selection(stream, info)
        except SessionError:
            return 0
        if sel is None:
            return max(0, hi - lo)
        passed = 0
        for start in range(lo, hi, CHUNK_ENTRIES):
            stop = min(hi, start + CHUNK_ENTRIES)
            try:
                arrays = reader.read(stream, sel.branches, start, stop)
                entries = np.arange(start, stop, dtype=np.int64)
                passed += int(np.count_nonzero(sel.evaluate({"": entries, **{b: arrays[b] for b in sel.branches}})))
            except Exception as exc:  # what cannot be read now is not counted (the skip is still made)
                log.debug("entries %d:%d of %s in %s not counted as skipped: %s", start, stop, stream, reader.name, exc)
        return passed

    # ------------------------------------------------------------------ serving

    def take(self, stream: str, n: int) -> Part:
        """Pop up to ``n`` pending records of ``stream`` as one part."""
        return self.take_ks(stream, n)[0]

    def take_ks(self, stream: str, n: int) -> tuple[Part, np.ndarray]:
        """Pop up to ``n`` pending records of ``stream``: the part, and their prescale indices."""
        st = self.streams[stream]
        ents, arrs, kss = [], [], []
        while st.pending and n > 0:
            c = st.pending[0]
            k = min(n, len(c.entries) - c.pos)
            ents.append(c.entries[c.pos : c.pos + k])
            arrs.append(c.arrays[c.pos : c.pos + k])
            kss.append(c.ks[c.pos : c.pos + k])
            n -= k
            c.pos += k
            st.served, st.served_passed = int(ents[-1][-1]) + 1, int(kss[-1][-1]) + 1
            if c.pos == len(c.entries):
                st.pending.popleft()
        file = self.position.file or ""
        unserved = self.unserved(stream)
        if len(ents) == 1:
            return Part(stream, file, ents[0], arrs[0], unserved), kss[0]
        return Part(stream, file, np.concatenate(ents), ak.concatenate(arrs), unserved), np.concatenate(kss)

    def drop(self, stream: str, n: int) -> None:
        """Skip ``n`` pending records of ``stream`` as if they were served (nothing is built)."""
        st = self.streams[stream]
        while st.pending and n > 0:
            c = st.pending[0]
            k = min(n, len(c.entries) - c.pos)
            c.pos += k
            n -= k
            st.served, st.served_passed = int(c.entries[c.pos - 1]) + 1, int(c.ks[c.pos - 1]) + 1
            if c.pos == len(c.entries):
                st.pending.popleft()

    def fit_sets(self, parts: list[Part], kss: list[np.ndarray], rows: list[np.ndarray],
                 nsets: int) -> tuple[list[int], int]:
        """Keep a reply's record data within ``budget`` bytes by keeping only its first sets.

        ``rows[i]`` holds, ascending, the set each record of ``parts[i]`` belongs to, and
        ``kss[i]`` their prescale indices. Returns how many records of each part are kept
        and how many sets (at least one); the records not kept are given back to their
        streams, to be served next.
        """
        budget = MAX_REPLY_BYTES

        def counts(m: int) -> list[int]:
            return [int(np.searchsorted(r, m)) for r in rows]

        def size(cs: list[int]) -> int:
            return sum(ak.to_packed(p.arrays[:c]).nbytes + 8 * c for p, c in zip(parts, cs) if c)

        m = nsets
        if sum(p.arrays.nbytes + 8 * len(p.entries) for p in parts) > budget:  # else surely within
            total = size(counts(m))
            while total > budget and m > 1:
                m = max(1, min(m - 1, int(m * budget / total)))
                total = size(counts(m))
        kept = counts(m)
        for p, ks, c in zip(parts, kss, kept):
            if c < len(p.entries):
                st = self.streams[p.stream]
                if c:
                    st.rewind(int(p.entries[c - 1]) + 1, int(ks[c - 1]) + 1)
                else:
                    st.rewind(int(p.entries[0]), int(ks[0]))
        return kept, m

    def unserved(self, stream: str) -> dict[str, str]:
        """What the current file's ``stream`` holds but cannot serve, of the branches the subscription wants."""
        reader = self.position.reader
        info = reader.trees.get(stream) if reader is not None else None
        if info is None or not info.unserved:
            return {}
        wanted = self.subscription.branches_for(stream)
        if wanted is None:
            return dict(info.unserved)
        return {b: why for b, why in info.unserved.items() if b in wanted}
