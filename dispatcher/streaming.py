"""Streamed batches: the server sends batch after batch within the client's credit window.

After one ``StreamBatches`` request the child keeps producing the next batch (and
reading the chunk after it) while the client decodes the last one, instead of
waiting for a request per batch. The client returns a ``Credit`` for each reply
it consumed; at most ``window`` replies are unconsumed at any time.

Exactness is kept by the server: it remembers where each unconsumed reply began
(per stream: first entry and prescale index), and ``EndStream`` says how many
replies the client consumed, so the rest are served again, as ``Rewind`` does for
``next()`` prefetch. A stream never leaves the current file while the client
holds replies from it; when it moves on with nothing outstanding and the client
ends the stream before consuming anything from the new file, the session goes back
to where it was, so ``go_to_next_file`` and resubscribing see the same position
as without streaming.

:class:`BatchStream` is the sans-IO part (tested in-process); :func:`serve_stream`
drives it over the child's socket.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np

from . import logsetup
from .columnar import Part, encode_parts
from .layouts import OrderLayout
from .protocol import Credit, EndStream, Error, Message, MessageType, Ok, RemoteProtocolError, StreamBatches, quote
from .session import Session
from .session_errors import SessionAbort, SessionError
from .subscription import KeepUp

log = logging.getLogger("dds.child")


class ClientSpoke(Exception):
    """The client sent something while the stream was waiting: read it before going on."""


class StreamWatch(Protocol):
    """What the stream needs of the child's socket watch."""

    def poll(self) -> Message | None: ...

    def next_request(self, idle_work: Callable[[], bool] | None = None) -> Message: ...

    def interruptible(self, on: bool) -> None: ...


class StreamReport(Protocol):
    """What the stream tells the child's status reporter: a reply counts when the client used it."""

    stream: BatchStream | None  # the stream running, whose unconsumed replies the client does not hold yet

    def used(self, header: dict, partial: dict | None = None) -> None: ...


class BatchStream:
    """One stream of batches of a session: what to send next, what the client consumed, how to end.

    Args:
        session (Session): the client's session (keep-up ``all`` or ``file``, no ``sync``).
        max_records (int): most records per batch.
        window (int): most replies sent and not yet consumed.
        report (StreamReport or None): told of each reply the client used (its ``data`` header).
    """

    def __init__(self, session: Session, max_records: int, window: int, sets: int = 0,
                 report: StreamReport | None = None):
        sub = session.sub
        if sub is None:
            raise SessionError(MessageType.BAD_SUBSCRIPTION, "no subscription yet: call subscribe() first")
        if sub.keep_up is KeepUp.RECORD or sub.sync:
            raise SessionError(MessageType.BAD_SUBSCRIPTION,
                               "streamed batches need keep_up 'all' or 'file' without sync; use next_batch")
        session.inorder.forget()  # a rewind after this refers to no reply
        self.session = session
        self.max_records = max_records
        self.window = window
        self.sets = sets  # > 0: replies of single-record sets (next() prefetch), else batches
        # per reply sent: where each stream stood before it ({stream: (served, served_passed)}) and what
        # it took ({stream: (entries, prescale indices)})
        # (only those not yet consumed: a long stream must not keep every reply's entry numbers)
        self.sent: collections.deque[tuple[dict[str, tuple[int, int]], dict[str, tuple[np.ndarray, np.ndarray]]]] \
            = collections.deque()
        self.acked = 0  # replies the client said it consumed (and dropped from ``sent``)
        self.total = 0  # replies sent
        # where the session was before the stream moved to another file: (replies sent before the move,
        # file, {stream: (served, served_passed)})
        self.moved: tuple[int, str, dict[str, tuple[int, int]]] | None = None
        self.report = report
        self.headers: collections.deque[dict] = collections.deque()  # of the replies not yet consumed

    @property
    def credits(self) -> int:
        return self.window - (self.total - self.acked)

    def credit(self, count: int) -> None:
        count = min(count, self.total - self.acked)
        for _ in range(count):
            self.sent.popleft()
            self._used(None)
        self.acked += count

    def sent_header(self, header: dict) -> None:
        """The ``data`` header of the reply :meth:`next_reply` just gave (counted once the client uses it)."""
        self.headers.append(header)

    def _used(self, partial: dict | None) -> None:
        header = self.headers.popleft() if self.headers else None
        if header is not None and self.report is not None:
            self.report.used(header, partial)

    def held_position(self) -> dict[str, int] | None:
        """Per stream, the entry after the last record the client used, while it holds replies not yet
        consumed (the session's cursors are ahead of it then); None when it holds none."""
        if not self.sent or not self.sent[0][0]:
            return None
        return {s: served for s, (served, _) in self.sent[0][0].items()}

    def next_reply(self, deadline: float) -> tuple[list[Part], OrderLayout | None] | None:
        """The next reply: (parts, layout). None: nothing now in the current file, and the client still
        holds replies from it (wait for its credit). With nothing outstanding this is ``next_batch`` (or
        ``next`` with prefetch) itself: it may move on to another file and waits (through the session's
        waiter) until ``deadline``."""
        inorder, position = self.session.inorder, self.session.position
        layout: OrderLayout | None = None
        stood = {s: (st.served, st.served_passed) for s, st in self.session.reader.streams.items()}
        if self.total > self.acked:
            if self.sets:
                got = inorder.sets_ready(self.sets)
                parts, layout = got if got is not None else (None, None)
            else:
                parts = inorder.batch_ready(self.max_records)
        else:
            before = (self.total, position.file, stood)
            try:
                if self.sets:
                    parts, layout = inorder.next(deadline, 1, self.sets)
                else:
                    parts = inorder.batch(deadline, self.max_records)
            finally:
                if position.file != before[1] and before[1] is not None:
                    self.moved = before  # type: ignore[assignment]
        # a rewind answers only a ``next`` reply; what a stream sent is given back by ``end``
        inorder.forget()
        if parts is None:
            return None
        self.session.fresh((parts, layout))  # lag and age, as in a reply to next / next_batch
        if self.moved is not None and self.moved[0] == self.total:
            stood = {}  # moved on for this reply: where the streams stood was in the other file
        self.sent.append((stood, {p.stream: (p.entries, ks) for p, ks in zip(parts, inorder.last_ks)}))
        self.total += 1
        return parts, layout

    def read_ahead(self) -> bool:
        """While the window is full: read one chunk towards the next reply (at most one reply ahead)."""
        return self.session.read_chunk_ahead(self.max_records, self.max_records)

    def end(self, consumed: int, partial: dict | None = None) -> dict:
        """The client consumed the first ``consumed`` replies, and ``partial[stream]`` records of each
        stream of the next one: serve the others again."""
        session = self.session
        consumed = max(self.acked, min(consumed, self.total))
        partial = (partial or {}) if consumed < self.total else {}
        for _ in range(consumed - self.acked):
            self._used(None)
        if any(partial.values()):
            self._used(partial)
        self.headers.clear()
        used_after_move = any(partial.values())
        if self.moved is not None and (consumed < self.moved[0] or (consumed == self.moved[0]
                                                                    and not used_after_move)):
            _, file, cursors = self.moved
            try:
                session.position.go_to(file)
            except SessionError as exc:  # the file is gone: stay where the stream went
                log.warning("end of stream: cannot go back to %s (%s): staying in %s", file, exc,
                            session.position.file)
                return {"file": session.position.file}
            for s, (served, passed) in cursors.items():
                if s in session.reader.streams:
                    session.reader.streams[s].rewind(served, passed)
            return {"file": file}
        if consumed < self.total:
            # each stream goes back to just after its last record used, as a client that asked for each
            # reply would find it (a new subscription starts there)
            stood, took = self.sent[consumed - self.acked]
            for s, st in session.reader.streams.items():
                used = partial.get(s, 0)
                if used and s in took:
                    entries, ks = took[s]
                    used = min(used, len(entries))
                    st.rewind(int(entries[used - 1]) + 1, int(ks[used - 1]) + 1)
                elif s in stood:
                    st.rewind(*stood[s])
                elif s in took:  # the reply moved to this file: from the first record it took
                    entries, ks = took[s]
                    st.rewind(int(entries[0]), int(ks[0]))
        return {"file": session.position.file}


def serve_stream(session: Session, watch: StreamWatch, msg: StreamBatches,
                 reply: Callable[[Message], None], report: StreamReport | None = None) -> BatchStream | None:
    """Send batches within the credit window until the client ends the stream or an error does.

    Returns the stream when an error ended it (an ``EndStream`` may still come for it), else None.
    ``reply`` sends without counting records; ``report`` counts each reply when the client used it.
    """
    try:
        stream = BatchStream(session, msg.max_records, msg.window, msg.sets, report)
    except SessionError as exc:
        reply(Error(exc.message_type, str(exc)))
        return None
    if report is not None:
        report.stream = stream
    try:
        return _serve(stream, watch, msg, reply)
    finally:
        if report is not None:
            report.stream = None


def _serve(stream: BatchStream, watch: StreamWatch, msg: StreamBatches,
           reply: Callable[[Message], None]) -> BatchStream | None:
    position = stream.session.position
    deadline = position.deadline(msg.timeout)

    def heard(m: Message) -> bool:
        """Take in a client message; True when it ended the stream."""
        nonlocal deadline
        deadline = position.deadline(msg.timeout)  # the wait counts from the client's last word
        if isinstance(m, Credit):
            stream.credit(m.count)
            return False
        if isinstance(m, EndStream):
            reply(Ok(stream.end(m.consumed, m.partial)))
            return True
        raise RemoteProtocolError(f"unexpected {m.TYPE!r} in a stream of batches")

    while True:
        m = watch.poll()
        while m is not None:
            if heard(m):
                return None
            m = watch.poll()
        if stream.credits <= 0:
            if heard(watch.next_request(stream.read_ahead)):
                return None
            continue
        watch.interruptible(True)
        try:
            got = stream.next_reply(deadline)
        except ClientSpoke:
            continue
        except SessionError as exc:
            reply(Error(exc.message_type, str(exc)))
            return stream
        except SessionAbort:
            raise
        except Exception as exc:  # a bug must cost one answer, not the session
            logsetup.bug(log, "error serving a stream of batches")
            reply(Error(MessageType.SERVER_ERROR, f"{type(exc).__name__}: {quote(str(exc))}"))
            return stream
        finally:
            watch.interruptible(False)
        if got is None:  # the client holds replies of this file: its next credit says when to go on
            if heard(watch.next_request(stream.read_ahead)):
                return None
            continue
        data = encode_parts(*got, ranges=True)
        stream.sent_header(data.header)
        reply(data)


def after_stream(ended: BatchStream | None, msg: EndStream) -> Message:
    """The answer to an ``EndStream`` that arrived after the stream had ended by an error."""
    if ended is None:
        return Ok({})
    return Ok(ended.end(msg.consumed, msg.partial))
