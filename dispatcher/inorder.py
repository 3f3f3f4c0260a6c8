"""Delivery in order (keep-up ``all`` and ``file``): every passing record, streams merged by entry.

Records of several streams are served in (entry, stream) order. Sets sent ahead
(prefetch) are remembered, so that a client that used only some of them can
rewind to just after the last one it used.
"""

from __future__ import annotations

import numpy as np

from .columnar import Part
from .layouts import OrderLayout
from .position import FilePosition
from .reader import StreamReader


class InOrder:
    """Serve passing records in file order and, per stream, entry order.

    Args:
        position (FilePosition): the current file.
        reader (StreamReader): the subscribed streams.
    """

    def __init__(self, position: FilePosition, reader: StreamReader):
        self.position = position
        self.reader = reader
        self._sent: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # stream -> (entries, prescale indices)
        self.last_ks: list[np.ndarray] = []  # prescale indices of the last batch's parts

    def next(self, deadline: float, advance_by: int, prefetch: int) -> tuple[list[Part], OrderLayout]:
        """The next record set after skipping ``advance_by - 1``, and up to ``prefetch - 1`` more ready now."""
        for _ in range(advance_by - 1):
            self.reader.take(self.produce(deadline), 1)
        self.produce(deadline)
        return self._merged(max(1, prefetch))

    def batch(self, deadline: float, max_records: int) -> list[Part]:
        """Up to ``max_records`` records of one stream, as soon as there is one."""
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
        self.last_ks = [ks]
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

    def _merged(self, n: int) -> tuple[list[Part], OrderLayout]:
        """Up to n pending records of all streams, merged in (entry, stream) order, without waiting."""
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
        order_streams = which[np.lexsort((which, entries))[:n]]
        names = list(streams)
        parts: list[Part] = []
        index: dict[int, int] = {}
        self._sent = {}
        for i in np.unique(order_streams):
            index[int(i)] = len(parts)
            name = names[i]
            part, ks = self.reader.take_ks(name, int(np.count_nonzero(order_streams == i)))
            parts.append(part)
            self._sent[name] = (part.entries, ks)
        self.last_ks = [self._sent[p.stream][1] for p in parts]
        return parts, OrderLayout(tuple(index[int(i)] for i in order_streams))

    def rewind(self, consumed: dict) -> None:
        """The client used only ``consumed[stream]`` records of the last prefetched reply.

        Each stream goes back to just after its last used record, so what follows is
        exactly what a client without prefetch would get next.
        """
        for s, st in self.reader.streams.items():
            used = consumed.get(s, 0)
            if s in self._sent and isinstance(used, int) and not isinstance(used, bool) and used >= 0:
                entries, ks = self._sent[s]
                if used == 0:
                    st.rewind(int(entries[0]), int(ks[0]))
                elif used < len(entries):
                    st.rewind(int(entries[used - 1]) + 1, int(ks[used - 1]) + 1)
                else:
                    st.rewind_unserved()
            else:
                st.rewind_unserved()
        self._sent = {}
