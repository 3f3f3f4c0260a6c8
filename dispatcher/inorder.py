"""Delivery in order (keep-up ``all`` and ``file``): every passing record, streams merged by entry.

Records of several streams are served in (entry, stream) order. Sets sent ahead
(prefetch) are remembered, so that a client that used only some of them can
rewind to just after the last one it used.
"""

from __future__ import annotations

import numpy as np

from .columnar import Part
from .delivery import Delivery
from .layouts import OrderLayout
from .position import FilePosition
from .protocol import MessageType
from .reader import CHUNK_ENTRIES, FIRST_CHUNK, StreamReader
from .session_errors import SessionError


class InOrder(Delivery):
    """Serve passing records in file order and, per stream, entry order (see :class:`Delivery`)."""

    def __init__(self, position: FilePosition, reader: StreamReader):
        super().__init__(position, reader)
        # what the last reply sent ahead, which a rewind may give back: stream -> (entries, prescale indices)
        self._sent: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._sent_file: str | None = None
        self.last_ks: list[np.ndarray] = []  # prescale indices of the last reply's parts (streamed batches)

    def forget(self) -> None:
        """A request other than the prefetched ``next`` a rewind refers to: no rewind from now on."""
        self._sent = {}
        self._sent_file = None

    def next(self, deadline: float, advance_by: int, prefetch: int) -> tuple[list[Part], OrderLayout]:
        """The next record set after skipping ``advance_by - 1``, and up to ``prefetch - 1`` more ready now.

        The first reply after a subscription holds at most FIRST_CHUNK sets: a new client's first record
        comes after one short read, and the sets after it stream in while it handles that one."""
        if self.reader.first_reply:
            self.reader.first_reply = False
            prefetch = min(prefetch, FIRST_CHUNK)
        self._skip(deadline, advance_by - 1)
        self.produce(deadline)
        return self._merged(max(1, prefetch))

    def _skip(self, deadline: float, n: int) -> None:
        """Skip ``n`` record sets, a chunk of merged records at a time (nothing is built), watching
        the deadline, the client and a stop between chunks. Sets skipped before a timeout stay skipped."""
        skipped = 0
        while skipped < n:
            self.produce(deadline)
            order, names = self._order(min(n - skipped, CHUNK_ENTRIES))
            for i in np.unique(order):
                self.reader.drop(names[i], int(np.count_nonzero(order == i)))
            skipped += len(order)
            if skipped < n:
                self.position.check(deadline, f"skipped {skipped} of {n} record sets before the timeout")

    def batch(self, deadline: float, max_records: int) -> list[Part]:
        """Up to ``max_records`` records of one stream, as soon as there is one (fewer if they
        would make a reply over reader.MAX_REPLY_BYTES)."""
        return self._take_batch(self.produce(deadline), max_records)

    def sets_ready(self, n: int) -> tuple[list[Part], OrderLayout] | None:
        """As :meth:`next` with prefetch ``n``, from what the current file holds now. None: nothing."""
        if not self.reader.fill():
            return None
        return self._merged(n)

    def batch_ready(self, max_records: int) -> list[Part] | None:
        """As :meth:`batch`, from what the current file holds now: never waits, never moves. None: nothing."""
        if not self.reader.fill():
            return None
        streams = self.reader.streams.items()
        return self._take_batch(min((st.head_entry(), i, s) for i, (s, st) in enumerate(streams) if st.pending)[2],
                                max_records)

    def _take_batch(self, stream: str, max_records: int) -> list[Part]:
        st = self.reader.streams[stream]
        while st.pending_count() < max_records and self.reader.read_chunk(stream, max_records):
            pass
        part, ks = self.reader.take_ks(stream, max_records)
        (kept,), _ = self.reader.fit_sets([part], [ks], [np.arange(len(ks))], len(ks))
        if kept < len(ks):
            part = Part(part.stream, part.file, part.entries[:kept], part.arrays[:kept], part.unserved)
        self.last_ks = [ks[:kept]]
        return [part]

    def produce(self, deadline: float) -> str:
        """Wait until some stream has a record to serve; return the stream whose next entry is smallest."""
        keep_up = self.reader.subscription.keep_up
        while True:
            if self.reader.fill():
                streams = self.reader.streams.items()
                return min((st.head_entry(), i, s) for i, (s, st) in enumerate(streams) if st.pending)[2]
            if self.position.move_on(keep_up):
                continue
            self.position.wait(deadline, self.position.no_record_text())

    def _order(self, n: int) -> tuple[np.ndarray, list[str]]:
        """The streams of the next (up to) n pending records in (entry, stream) order, reading
        each stream until it has n pending or nothing more now; and the stream names."""
        streams = self.reader.streams
        heads = []
        for i, (s, st) in enumerate(streams.items()):
            while st.pending_count() < n and self.reader.read_chunk(s, n):
                pass
            got = 0
            for c in st.pending:
                take = c.entries[c.pos : c.pos + n - got]
                heads.append((take, np.full(len(take), i, dtype=np.int64)))
                got += len(take)
                if got >= n:
                    break
        entries = np.concatenate([h[0] for h in heads])
        which = np.concatenate([h[1] for h in heads])
        return which[np.lexsort((which, entries))[:n]], list(streams)

    def _merged(self, n: int) -> tuple[list[Part], OrderLayout]:
        """Up to n pending records of all streams, merged in (entry, stream) order, without waiting
        (fewer if they would make a reply over reader.MAX_REPLY_BYTES)."""
        order_streams, names = self._order(n)
        parts: list[Part] = []
        kss: list[np.ndarray] = []
        rows: list[np.ndarray] = []
        for i in np.unique(order_streams):
            part, ks = self.reader.take_ks(names[i], int(np.count_nonzero(order_streams == i)))
            parts.append(part)
            kss.append(ks)
            rows.append(np.flatnonzero(order_streams == i))
        kept, m = self.reader.fit_sets(parts, kss, rows, len(order_streams))
        index: dict[int, int] = {}
        out: list[Part] = []
        self._sent = {}
        self._sent_file = self.position.file
        for i, part, ks, c in zip(np.unique(order_streams), parts, kss, kept):
            if c == 0:
                continue
            if c < len(part.entries):
                part = Part(part.stream, part.file, part.entries[:c], part.arrays[:c], part.unserved)
            index[int(i)] = len(out)
            out.append(part)
            self._sent[part.stream] = (part.entries, ks[:c])
        self.last_ks = [self._sent[p.stream][1] for p in out]
        return out, OrderLayout(tuple(index[int(i)] for i in order_streams[:m]))

    def rewind(self, file: str, consumed: dict) -> None:
        """The client used only ``consumed[stream]`` records of the last prefetched reply.

        Each stream goes back to just after its last used record, so what follows is
        exactly what a client without prefetch would get next. Accepted only as the
        request right after that reply, for its file, with counts within it
        (SessionError BAD_SUBSCRIPTION otherwise, and nothing moves).
        """
        sent, sent_file = self._sent, self._sent_file
        self.forget()
        if not sent or file != sent_file:
            raise SessionError(MessageType.BAD_SUBSCRIPTION,
                               "rewind is accepted only right after the next reply it gives back records of")
        for s, used in consumed.items():
            if s not in sent or isinstance(used, bool) or not isinstance(used, int) or not 0 <= used <= len(sent[s][0]):
                raise SessionError(MessageType.BAD_SUBSCRIPTION,
                                   "rewind counts must be, per stream of the last reply, 0 up to its records there")
        for s, st in self.reader.streams.items():
            used = consumed.get(s, 0)
            if s in sent:
                entries, ks = sent[s]
                if used == 0:
                    st.rewind(int(entries[0]), int(ks[0]))
                elif used < len(entries):
                    st.rewind(int(entries[used - 1]) + 1, int(ks[used - 1]) + 1)
                else:
                    st.rewind_unserved()
            else:
                st.rewind_unserved()
