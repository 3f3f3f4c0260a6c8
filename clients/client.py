"""DDSClient: connect to a ddsparentserver, subscribe, and receive record sets."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import operator
import os
import socket
import time
from typing import NoReturn, TypeVar

import awkward as ak
import numpy as np

from dispatcher.columnar import Part, decode_parts
from dispatcher.compression import CODECS, decompress_data
from dispatcher.layouts import Layout, OrderLayout, SetsLayout, SyncBatchLayout, from_info
from dispatcher.protocol import (
    MAX_TIMEOUT,
    MAX_WINDOW,
    PROTOCOL_VERSION,
    Connection,
    Data,
    Error,
    GoToFile,
    GoToNextFile,
    Hello,
    InvalidMessage,
    Leave,
    Message,
    MessageType,
    Next,
    NextBatch,
    Ok,
    ProtocolError,
    Rewind,
    Subscribe,
    Welcome,
)
from dispatcher.subscription import Subscription, SubscriptionError
from dispatcher.tlsstream import TLSStream, client_tls_context
from dispatcher.transport import SEND_TIMEOUT, recv_message, send_chunks

from .batchstream import SESSION_ENDING, BatchStream
from .errors import DDSConnectionError, DDSError, DDSTimeout
from .failover import Position, server_list
from .records import RecordBatch, RecordSet

#: extra seconds the client waits beyond a request's own timeout (transfer time)
REPLY_MARGIN = 30.0
#: seconds between two rounds over the server list while resuming
RESUME_PAUSE = 0.25
#: seconds a group member waits for the server to take its leave at close()
LEAVE_SECONDS = 5.0

M = TypeVar("M", bound=Message)


class DDSClient:
    """A session with a ddsparentserver.

    Args:
        host (str or list): server host; or a list of ``"host:port"`` (also one comma-separated
            string) tried in order: the first that accepts is kept, unreachable, refusing and
            busy ones are skipped, and when none accepts the last error is raised; default ``"localhost"``.
        port (int): server port (of a host given without one); default 9090.
        connect_timeout (float): seconds to wait for the connection and greeting; default 10.
        token (str): shared secret, if the server requires one (``--token-file``); default none.
        prefetch (int): ``next()`` asks for up to this many record sets that are ready now and
            hands them out one by one (moves and new subscriptions give the unused ones back,
            so results are the same as without); 1 turns it off; default 256.
        window (int): ``next_batch`` and ``next()`` stream: the server sends up to this many replies
            ahead (2-4 keep reading and decoding overlapped; what was sent and not used is served
            again, so results are the same as without); 0 turns it off; default 3.
        tls (bool): talk TLS, verifying the server's certificate and host name; default False.
        cafile (str): with TLS, trust this CA (or self-signed) certificate file; default: the system CAs.
            Giving ``cafile`` implies ``tls=True``.
        compression (str or None): ``"zstd"`` or ``"lz4"``: record data travels compressed, as
            agreed at the handshake; a server that cannot raises DDSError; default None.
        resume (bool): when the server goes away (stopped, crashed, network lost), ``next``,
            ``next_batch`` and ``go_to_next_file`` reconnect (to the first server of the list
            that accepts, retrying for up to ``connect_timeout`` seconds) and continue where the
            client was, per stream at the file and entry after the last record handed out;
            default False.

    Raises:
        DDSConnectionError: no server at host:port.
        DDSError: the server refused (``SERVER_BUSY``, ``FORBIDDEN``, ``PROTOCOL_ERROR``).

    Example:
        >>> with DDSClient("localhost", 9090) as dds:            # doctest: +SKIP
        ...     dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all"))
        ...     rs = dds.next(timeout=10)
    """

    def __init__(self, host: str | list | tuple = "localhost", port: int = 9090, *, connect_timeout: float = 10.0,
                 token: str = "", prefetch: int = 256, window: int = 3, tls: bool = False, cafile: str | None = None,
                 compression: str | None = None, resume: bool = False):
        try:
            self.servers = server_list(host, int(port))
        except ValueError as exc:
            raise DDSConnectionError(str(exc)) from None
        self.host, self.port = self.servers[0]
        self.server = ""
        if connect_timeout is not None:
            connect_timeout = _seconds(connect_timeout, "connect_timeout")
        # next() asks for up to this many sets that are ready now and hands them out one by one
        self.prefetch = max(1, min(_count(prefetch, "prefetch"), MAX_PREFETCH))
        self._ahead: collections.deque[RecordSet] = collections.deque()  # received but not yet returned
        self._used: dict[str, int] = {}  # records of each stream returned from the last prefetched reply
        self._sub: Subscription | None = None
        self.window = max(0, min(_count(window, "window"), MAX_WINDOW))
        self._stream: BatchStream | None = None  # next_batch's stream, while one runs
        self._conn = Connection("client")
        self._sock: socket.socket | TLSStream | None = None
        self._options = (float(connect_timeout), token or "", bool(tls or cafile), cafile)
        self.compression = _codec(compression)
        self.resume = bool(resume)
        self._position = Position()
        self._connect_any()

    def _connect_any(self) -> None:
        """Connect to the first server of the list that accepts; when none does, raise the last error."""
        error: DDSError | None = None
        for host, port in self.servers:
            try:
                self._connect(host, port)
                return
            except DDSError as exc:  # unreachable, refusing or busy: the next one
                error = exc
        assert error is not None
        raise error

    def _connect(self, host: str, port: int) -> None:
        connect_timeout, token, tls, cafile = self._options
        self.host, self.port = host, port
        self._conn = Connection("client")
        try:
            plain = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            why = exc.strerror or exc
            raise DDSConnectionError(f"cannot connect to ddsparentserver at {host}:{port}: {why}") from None
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: socket.socket | TLSStream = plain
        if tls:
            try:
                sock = TLSStream(client_tls_context(cafile).wrap_socket(plain, server_hostname=host))
            except OSError as exc:  # ssl.SSLError: no TLS there, unknown CA, wrong host name...
                plain.close()
                raise DDSConnectionError(f"TLS with ddsparentserver at {host}:{port} failed: {exc}") from None
        self._sock = sock
        hello = Hello(PROTOCOL_VERSION, "DDSClient", token=token, compression=self.compression)
        try:
            welcome = self._call(hello, connect_timeout)
        except DDSError:  # e.g. SERVER_ERROR (the server could not fork): the socket is of no more use
            self._drop()
            raise
        if not isinstance(welcome, Welcome):
            self._drop()
            raise DDSError(f"unexpected greeting from {self.address}", MessageType.PROTOCOL_ERROR)
        if welcome.compression != self.compression:
            self._drop()
            raise DDSError(f"ddsparentserver at {self.address} cannot compress with {self.compression!r}",
                           MessageType.PROTOCOL_ERROR)
        self.server = welcome.server

    # ------------------------------------------------------------------ basics

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def is_valid(self) -> bool:
        """True while the session can take requests."""
        return self._sock is not None

    def close(self) -> None:
        """End the session (the server's child exits). A group member first acknowledges what it handed
        out and gives back the record sets it had received and not handed out yet."""
        self._close(clean=True)

    def _close(self, clean: bool) -> None:
        if clean and self._sub is not None and self._sub.group is not None and self._sock is not None:
            try:
                self._end_stream()
                if self._ahead:
                    leave = Leave(self._ahead[0].file, dict(self._used))
                else:
                    leave = Leave()
                self._ahead.clear()
                self._call(leave, LEAVE_SECONDS)
            except DDSError:  # the session is gone already: the server treats it as ended without a word
                pass
        self._drop()

    shutdown = close

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        # a group member leaving on an exception acknowledges nothing more: what it was handed last goes
        # to another member (marked redelivered), as when a worker crashes
        self._close(clean=exc_type is None)

    def __repr__(self) -> str:
        state = "connected" if self.is_valid() else "closed"
        return f"<DDSClient {self.address} {state}>"

    def _drop(self) -> None:
        self._stream = None  # a stream ends with its session (a new session starts its own)
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _call(self, request, timeout: float):
        """Send one request and return its reply; raise DDSError for error replies."""
        self._send(request)
        reply = self._receive(timeout)
        if isinstance(reply, Error):
            self._raise_for(reply)
        return reply

    def _send(self, message: Message) -> None:
        if self._sock is None:
            raise DDSConnectionError(f"session with {self.address} is closed")
        try:
            frame = self._conn.send(message)
        except (ValueError, TypeError) as exc:  # a value the wire cannot carry: nothing was sent
            raise DDSError(f"request not sent: {exc}", MessageType.BAD_SUBSCRIPTION) from None
        with self._io(SEND_TIMEOUT):
            self._sock.settimeout(SEND_TIMEOUT)
            send_chunks(self._sock, frame)

    def _receive(self, timeout: float) -> Message:
        """The next message from the server (an error reply too); DDSError for a broken session."""
        if self._sock is None:
            raise DDSConnectionError(f"session with {self.address} is closed")
        with self._io(timeout):
            return recv_message(self._sock, self._conn, timeout)
        raise AssertionError("unreachable")  # _io raises for every failure

    @contextlib.contextmanager
    def _io(self, timeout: float):
        try:
            yield
        except TimeoutError:
            self._drop()  # a late reply would put the conversation out of step
            raise DDSConnectionError(f"no answer from {self.address} within {timeout:g} s; session closed") from None
        except ProtocolError as exc:
            self._drop()
            raise DDSError(f"protocol error talking to {self.address}: {exc}", MessageType.PROTOCOL_ERROR) from None
        except OSError as exc:
            self._drop()
            raise DDSConnectionError(f"connection to {self.address} lost: {exc}") from None

    def _raise_for(self, reply: Error) -> NoReturn:
        mtype = reply.message_type
        if mtype in SESSION_ENDING:
            self._drop()
        text = reply.message or mtype.as_string()
        if mtype is MessageType.TIMEOUT:
            raise DDSTimeout(text)
        raise DDSError(text, mtype)

    # ------------------------------------------------------------------ resuming

    def _resuming(self, request, timeout: float):
        """``request(seconds left)``; with ``resume``, once more after each reconnect when the server went away."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return request(max(0.0, deadline - time.monotonic()))
            except DDSTimeout:
                raise
            except DDSError as exc:
                lost = isinstance(exc, DDSConnectionError) or exc.message_type is MessageType.SHUTDOWN
                if not (self.resume and lost and self._sub is not None) or time.monotonic() > deadline:
                    raise
                self._reconnect(exc)

    def _reconnect(self, cause: DDSError) -> None:
        """A new session on the first server that accepts, subscribed to continue where this one was."""
        self._drop()
        self._ahead.clear()
        self._used = {}
        connect_timeout = self._options[0]
        give_up = time.monotonic() + connect_timeout
        while True:
            try:
                self._connect_any()
                break
            except DDSError as exc:
                if exc.message_type not in (MessageType.SERVER_ERROR, MessageType.SERVER_BUSY,
                                            MessageType.SHUTDOWN) or time.monotonic() + RESUME_PAUSE > give_up:
                    raise DDSConnectionError(f"{cause}; could not resume within {connect_timeout:g} s: {exc}",
                                             exc.message_type) from None
                time.sleep(RESUME_PAUSE)
        assert self._sub is not None
        restart = self._position.restart_file()
        sub = dataclasses.replace(self._sub, start=restart) if restart else self._sub
        self._call(Subscribe(sub.to_dict()), 60.0)

    # ------------------------------------------------------------------ requests

    def subscribe(self, subscription: Subscription | None = None, **kwargs) -> dict:
        """Send a subscription (or build one from keywords); applies from the current position.

        Raises:
            DDSError: ``BAD_SUBSCRIPTION`` or ``BAD_SELECTION``, naming the problem; the session stays usable.
        """
        if subscription is None:
            try:
                subscription = Subscription(**kwargs)
            except SubscriptionError as exc:
                raise DDSError(str(exc), MessageType.BAD_SUBSCRIPTION) from None
        elif kwargs:
            raise TypeError("give a Subscription or keywords, not both")
        self._give_back()
        reply = self._call(Subscribe(subscription.to_dict()), 60.0)
        if self._grouped() or subscription.group is not None:
            self._position.clear()  # a group places its members; one leaving it starts afresh
        self._sub = subscription
        return reply.info if isinstance(reply, Ok) else {}

    def next(self, timeout: float = 120.0, advance_by: int = 1) -> RecordSet:
        """The next record set passing the subscription.

        Args:
            timeout (float): seconds to wait; default 120.
            advance_by (int): return the n-th next set, skipping n-1; default 1.

        Raises:
            DDSTimeout: nothing within ``timeout``; the session stays usable.
            DDSError: ``BAD_SUBSCRIPTION`` for a timeout or ``advance_by`` out of range, before anything is sent.
        """
        if (self._ahead and advance_by.__class__ is int and advance_by == 1 and timeout.__class__ in (int, float)
                and 0 <= timeout <= MAX_TIMEOUT):
            # the common case, served from what the last reply brought: no request to build and check
            rs = self._pop_set()
            if self._new_set(rs):
                return rs
        # checked before anything is sent
        request = _request(Next, _seconds(timeout, "timeout"), _count(advance_by, "advance_by"), 1)
        deadline = time.monotonic() + request.timeout
        while True:
            rs = self._resuming(lambda left: self._next(left, request.advance_by, request.timeout), _left(deadline))
            if self._new_set(rs):  # one handed out before a reconnect is skipped
                return rs

    def _new_set(self, rs: RecordSet) -> bool:
        """False for a set handed out before a reconnect (``resume``: the new session replays from the
        start of a file); the position to resume from is kept only by clients that resume."""
        if not self.resume or self._grouped():
            return True
        if self._position.seen_set(rs):
            return False
        self._position.note_set(rs)
        return True

    def _next(self, timeout: float, advance_by: int, asked: float) -> RecordSet:
        """One set, waiting up to ``timeout``; ``asked`` is the caller's own timeout (what a stream is for)."""
        sub = self._sub
        prefetch = self.prefetch if sub is not None and sub.keep_up.value != "record" else 1
        request = _request(Next, _seconds(timeout, "timeout"), _count(advance_by, "advance_by"), prefetch)
        if (self.window >= 1 and prefetch > 1 and request.advance_by == 1 and sub is not None and not sub.sync
                and sub.group is None):
            # streamed: the server sends the next sets while these are handed out
            wait = _stream_wait(asked, request.timeout)
            stream = self._stream
            if stream is None or stream.params != (prefetch, wait, prefetch):
                self._give_back()
                stream = self._stream = BatchStream(self, prefetch, wait, self.window, sets=prefetch)
            if not self._ahead:
                self._ahead.extend(self._built(_record_sets, *self._data(stream.next(REPLY_MARGIN, request.timeout))))
                self._used = {}
            return self._pop_set()
        self._end_stream()
        advance_by = request.advance_by
        if len(self._ahead) < advance_by:
            # the sets held are skipped: the server's position is past them
            request = dataclasses.replace(request, advance_by=advance_by - len(self._ahead))
            self._ahead.clear()
            reply = self._call(request, request.timeout + REPLY_MARGIN)
            self._ahead.extend(self._built(_record_sets, *self._data(reply)))
            self._used = {}
            advance_by = 1  # the server skipped the others
        for _ in range(advance_by):
            rs = self._pop_set()
        return rs

    def _grouped(self) -> bool:
        return self._sub is not None and self._sub.group is not None

    def _pop_set(self) -> RecordSet:
        rs = self._ahead.popleft()
        for stream in rs.entries:
            self._used[stream] = self._used.get(stream, 0) + 1
        if not self._ahead and self._stream is not None and self._stream.sets:
            self._used = {}
            try:
                self._stream.used_one()  # every set of that reply handed out
            except DDSConnectionError:  # the session is gone: the next call says so (or resumes); this set came whole
                pass
        return rs

    def _end_stream(self) -> None:
        """End the stream of batches or sets; the server serves again what it sent and was not used."""
        if self._stream is not None:
            stream, self._stream = self._stream, None
            if stream.sets:
                stream.end(self._used if self._ahead else {})
                self._ahead.clear()
                self._used = {}
            else:
                stream.end()

    def _give_back(self) -> None:
        """Tell the server which sets and batches sent ahead were not used, so they are served again."""
        self._end_stream()
        if not self._ahead:
            return
        file = self._ahead[0].file
        self._ahead.clear()
        self._call(Rewind(file, self._used), 60.0)

    def next_batch(self, max_records: int = 1000, timeout: float = 120.0) -> RecordBatch:
        """Up to ``max_records`` passing records of one stream from one file, as soon as one is there."""
        request = _request(NextBatch, _count(max_records, "max_records"), _seconds(timeout, "timeout"))
        deadline = time.monotonic() + request.timeout
        while True:
            batch = self._resuming(lambda left: self._next_batch(request, left), _left(deadline))
            if not self.resume or self._grouped():  # a group's records come in the order they are leased
                return batch
            batch = self._position.fresh_batch(batch)
            if batch is not None:
                self._position.note_batch(batch)
                return batch

    def _next_batch(self, request: NextBatch, timeout: float) -> RecordBatch:
        sub = self._sub
        if self.window < 1 or sub is None or sub.keep_up.value == "record" or sub.sync or sub.group is not None:
            self._give_back()
            request = dataclasses.replace(request, timeout=timeout)
            reply = self._call(request, request.timeout + REPLY_MARGIN)
            return self._built(_record_batch, *self._data(reply))
        # streamed: the server reads the next batches while this one is used
        wait = _stream_wait(request.timeout, timeout)
        stream = self._stream
        if stream is None or stream.params != (request.max_records, wait, 0):
            self._give_back()
            stream = self._stream = BatchStream(self, request.max_records, wait, self.window)
        return self._built(_record_batch, *self._data(stream.next(REPLY_MARGIN, timeout)))

    def go_to_file(self, name: str) -> str:
        """Continue at entry 0 of data file ``name``. Raises DDSError(NO_FILE) for unknown or outside names."""
        if isinstance(name, os.PathLike):
            name = os.fspath(name)
        if not isinstance(name, str):
            raise DDSError(f"a data file name is a str, not {type(name).__name__}", MessageType.NO_FILE)
        self._end_stream()
        reply = self._call(GoToFile(name), 60.0)
        self._ahead.clear()  # only after the move: a refused one keeps the position and these sets
        file = reply.info.get("file", name)
        self._position.clear(file)
        return file

    def go_to_next_file(self, timeout: float = 120.0) -> str:
        """Continue at entry 0 of the file after the current one, waiting for it to appear."""
        request = _request(GoToNextFile, _seconds(timeout, "timeout"))

        def go(left: float) -> Message:
            self._end_stream()
            return self._call(dataclasses.replace(request, timeout=left), left + REPLY_MARGIN)

        reply = self._resuming(go, request.timeout)
        self._ahead.clear()
        file = reply.info.get("file", "")
        self._position.clear(file or None)
        return file

    def _data(self, reply: Message) -> tuple[list[Part], Layout | None]:
        """The parts of a data reply and its layout, checked; a malformed one ends the session."""
        if not isinstance(reply, Data):
            raise DDSError(f"expected record data from {self.address}, got {reply.TYPE!r}", MessageType.PROTOCOL_ERROR)
        try:
            parts = decode_parts(decompress_data(reply))
            return parts, from_info(reply.header.get("info"), len(parts))
        except ProtocolError as exc:
            self._drop()
            raise DDSError(str(exc), MessageType.PROTOCOL_ERROR) from None

    def _built(self, build, *args):
        """Record sets or a batch from checked parts; data that still does not make them is a protocol error."""
        try:
            return build(*args)
        except DDSError:
            raise
        except Exception as exc:  # awkward and numpy raise assorted errors on inconsistent data
            self._drop()
            raise DDSError(f"malformed record data from {self.address}: {type(exc).__name__}: {exc}",
                           MessageType.PROTOCOL_ERROR) from None


#: most record sets one reply is asked for (protocol.MAX_BATCH)
MAX_PREFETCH = 1_000_000


def _refused(name: str, what: str, value: object) -> DDSError:
    return DDSError(f"{name} must be {what}, not {_short(value)}", MessageType.BAD_SUBSCRIPTION)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _seconds(value: object, name: str) -> float:
    """A number of seconds as a float; DDSError BAD_SUBSCRIPTION for anything else (the range is the request's)."""
    if isinstance(value, (bool, str, bytes)):
        raise _refused(name, "a number of seconds", value)
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise _refused(name, "a number of seconds", value) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise _refused(name, "a finite number of seconds, 0 or more", value)
    return seconds


def _count(value: object, name: str) -> int:
    """A whole number; DDSError BAD_SUBSCRIPTION for anything else (the range is the request's)."""
    if isinstance(value, bool):
        raise _refused(name, "a whole number", value)
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise _refused(name, "a whole number", value) from None


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _stream_wait(asked: float, left: float) -> float:
    """The timeout a stream serves a call with: the caller's own, unless much less of it is left
    (a retry after a resume) than the client's wait beyond the server's can cover."""
    return asked if asked - left <= REPLY_MARGIN / 2 else left


def _codec(name: str | None) -> str:
    """The codec a client asks for, as sent in its hello ("" for none)."""
    if name in (None, "", "none"):
        return ""
    if name not in CODECS:
        raise ValueError(f"compression must be one of {', '.join(map(repr, CODECS))} or None, not {name!r}")
    return str(name)


def _request(cls: type[M], *args: object) -> M:
    """Build a request; a value out of range fails here, before anything is sent."""
    try:
        return cls(*args)
    except InvalidMessage as exc:
        raise DDSError(str(exc), MessageType.BAD_SUBSCRIPTION) from None


def _record_sets(parts: list[Part], layout: Layout | None) -> list[RecordSet]:
    if isinstance(layout, OrderLayout):  # single-record sets sent ahead: set i is the next row of part order[i]
        rows = [_single_rows(p) for p in parts]
        used = [0] * len(parts)
        out = []
        for i in layout.order:
            p, r = parts[i], used[i]
            used[i] += 1
            values, numbers, lag, age = rows[i]
            out.append(RecordSet(p.file, {p.stream: values[r]}, {p.stream: numbers[r]},
                                 unserved={p.stream: dict(p.unserved)} if p.unserved else None,
                                 lag={p.stream: lag[r]} if lag is not None else None,
                                 age=age[r] if age is not None else None,
                                 skipped={p.stream: p.skipped} if p.skipped is not None else None,
                                 redelivered=p.redelivered))
        return out
    if not isinstance(layout, SetsLayout):
        raise DDSError(f"record sets without a set layout: {type(layout).__name__}", MessageType.PROTOCOL_ERROR)
    out = []
    for s in layout.sets:
        records, entries = {}, {}
        for part_index, row in s.members:
            p = parts[part_index]
            records[p.stream] = p.arrays[row].to_list()
            entries[p.stream] = int(p.entries[row])
        members = [parts[i] for i, _ in s.members]
        out.append(RecordSet(s.file, records, entries, s.missing, unserved=_unserved(members),
                             **_fresh([(parts[i], row) for i, row in s.members])))
    return out


def _single_rows(p: Part) -> tuple[list, list, list | None, list | None]:
    """A part's records, entries, and each row's lag and age, as ``_fresh`` gives them one row at a time."""
    entries = p.entries.tolist()
    lag = (p.lag + entries[-1] - p.entries).tolist() if p.lag is not None and entries else None
    age = None
    if p.age and entries:
        lasts = np.array([a[0] for a in p.age], dtype=np.int64)
        seconds = np.array([a[1] for a in p.age], dtype=np.float64)
        # each row: the first age step whose last entry is at or after it, else the last step
        age = seconds[np.minimum(np.searchsorted(lasts, p.entries, side="left"), len(seconds) - 1)].tolist()
    return p.arrays.to_list(), entries, lag, age


def _record_batch(parts: list[Part], layout: Layout | None) -> RecordBatch:
    if layout is None:
        p = parts[0]
        return RecordBatch(p.stream, p.file, p.entries, p.arrays, unserved=_unserved([p]),
                           redelivered=p.redelivered, **_fresh([(p, len(p.entries) - 1)]))
    if not isinstance(layout, SyncBatchLayout):
        raise DDSError(f"a batch with a set layout: {type(layout).__name__}", MessageType.PROTOCOL_ERROR)
    # synced sets: one field per stream, None where the stream is missing from a set
    n = layout.length
    fields, entries = {}, {}
    file = parts[0].file if parts else ""
    for p in parts:
        index = np.full(n, -1, dtype=np.int64)
        rows = np.asarray(layout.positions[p.stream], dtype=np.int64)
        index[rows] = np.arange(len(rows))
        content = ak.contents.IndexedOptionArray(ak.index.Index64(index), p.arrays.layout)
        fields[p.stream] = ak.Array(content)
        ent = np.full(n, -1, dtype=np.int64)
        ent[rows] = p.entries
        entries[p.stream] = ent
    return RecordBatch(None, file, entries, ak.zip(fields, depth_limit=1), unserved=_unserved(parts),
                       **_fresh([(p, len(p.entries) - 1) for p in parts if len(p.entries)]))


def _unserved(parts: list[Part]) -> dict[str, dict[str, str]]:
    """``{stream: {branch: why}}``: what the file's streams hold that the server cannot serve."""
    return {p.stream: dict(p.unserved) for p in parts if p.unserved}


def _fresh(members: list[tuple[Part, int]]) -> dict:
    """``lag``, ``age`` and ``skipped`` of a set or batch made of these (part, row) members.

    A part's ``lag`` counts after its last record, so a row before it lags by the entries in
    between too; its ``age`` steps give each row the age of the records up to that step's entry.
    """
    lag: dict[str, int] = {}
    skipped: dict[str, int] = {}
    ages: list[float] = []
    for p, row in members:
        entry = int(p.entries[row])
        if p.lag is not None:
            lag[p.stream] = p.lag + int(p.entries[-1]) - entry
        if p.age:
            ages.append(next((seconds for last, seconds in p.age if last >= entry), p.age[-1][1]))
        if p.skipped is not None:
            skipped[p.stream] = p.skipped
    return {"lag": lag, "age": min(ages) if ages else None, "skipped": skipped}
