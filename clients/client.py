"""DDSClient: connect to a ddsparentserver, subscribe, and receive record sets."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import socket
from typing import NoReturn, TypeVar

import awkward as ak
import numpy as np

from dispatcher.columnar import Part, decode_parts
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
from dispatcher.transport import SEND_TIMEOUT, recv_message, send_message

from .batchstream import BatchStream
from .errors import DDSConnectionError, DDSError, DDSTimeout
from .records import RecordBatch, RecordSet

#: extra seconds the client waits beyond a request's own timeout (transfer time)
REPLY_MARGIN = 30.0
#: error replies after which the server has closed the session
_SESSION_ENDING = (MessageType.SHUTDOWN, MessageType.PROTOCOL_ERROR, MessageType.SERVER_BUSY, MessageType.FORBIDDEN)

M = TypeVar("M", bound=Message)


class DDSClient:
    """A session with a ddsparentserver.

    Args:
        host (str): server host; default ``"localhost"``.
        port (int): server port; default 9090.
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

    Raises:
        DDSConnectionError: no server at host:port.
        DDSError: the server refused (``SERVER_BUSY``, ``FORBIDDEN``, ``PROTOCOL_ERROR``).

    Example:
        >>> with DDSClient("localhost", 9090) as dds:            # doctest: +SKIP
        ...     dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all"))
        ...     rs = dds.next(timeout=10)
    """

    def __init__(self, host: str = "localhost", port: int = 9090, *, connect_timeout: float = 10.0, token: str = "",
                 prefetch: int = 256, window: int = 3, tls: bool = False, cafile: str | None = None):
        self.host = host
        self.port = int(port)
        self.server = ""
        # next() asks for up to this many sets that are ready now and hands them out one by one
        self.prefetch = max(1, int(prefetch))
        self._ahead: collections.deque[RecordSet] = collections.deque()  # received but not yet returned
        self._used: dict[str, int] = {}  # records of each stream returned from the last prefetched reply
        self._sub: Subscription | None = None
        self.window = max(0, min(int(window), MAX_WINDOW))
        self._stream: BatchStream | None = None  # next_batch's stream, while one runs
        self._conn = Connection("client")
        self._sock: socket.socket | TLSStream | None = None
        try:
            plain = socket.create_connection((host, self.port), timeout=connect_timeout)
        except OSError as exc:
            why = exc.strerror or exc
            raise DDSConnectionError(f"cannot connect to ddsparentserver at {host}:{port}: {why}") from None
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: socket.socket | TLSStream = plain
        if tls or cafile:
            try:
                sock = TLSStream(client_tls_context(cafile).wrap_socket(plain, server_hostname=host))
            except OSError as exc:  # ssl.SSLError: no TLS there, unknown CA, wrong host name...
                plain.close()
                raise DDSConnectionError(f"TLS with ddsparentserver at {host}:{port} failed: {exc}") from None
        self._sock = sock
        try:
            welcome = self._call(Hello(PROTOCOL_VERSION, "DDSClient", token=token or ""), connect_timeout)
        except DDSError:  # e.g. SERVER_ERROR (the server could not fork): the socket is of no more use
            self._drop()
            raise
        if not isinstance(welcome, Welcome):
            self._drop()
            raise DDSError(f"unexpected greeting from {self.address}", MessageType.PROTOCOL_ERROR)
        self.server = welcome.server

    # ------------------------------------------------------------------ basics

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def is_valid(self) -> bool:
        """True while the session can take requests."""
        return self._sock is not None

    def close(self) -> None:
        """End the session (the server's child exits)."""
        self._drop()

    shutdown = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        state = "connected" if self.is_valid() else "closed"
        return f"<DDSClient {self.address} {state}>"

    def _drop(self) -> None:
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
        with self._io(SEND_TIMEOUT):
            send_message(self._sock, self._conn, message)

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
        if mtype in _SESSION_ENDING:
            self._drop()
        text = reply.message or mtype.as_string()
        if mtype is MessageType.TIMEOUT:
            raise DDSTimeout(text)
        raise DDSError(text, mtype)

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
        if self._ahead and advance_by == 1 and isinstance(timeout, int | float) and 0 <= timeout <= MAX_TIMEOUT:
            # the common case, served from what the last reply brought: no request to build and check
            return self._pop_set()
        sub = self._sub
        prefetch = self.prefetch if sub is not None and sub.keep_up.value != "record" else 1
        request = _request(Next, float(timeout), int(advance_by), prefetch)
        if self.window >= 1 and prefetch > 1 and request.advance_by == 1 and sub is not None and not sub.sync:
            # streamed: the server sends the next sets while these are handed out
            stream = self._stream
            if stream is None or stream.params != (prefetch, request.timeout, prefetch):
                self._give_back()
                stream = self._stream = BatchStream(self, prefetch, request.timeout, self.window, sets=prefetch)
            if not self._ahead:
                self._ahead.extend(_record_sets(*self._data(stream.next(REPLY_MARGIN))))
                self._used = {}
            return self._pop_set()
        self._end_stream()
        advance_by = request.advance_by
        if len(self._ahead) < advance_by:
            # the sets held are skipped: the server's position is past them
            request = dataclasses.replace(request, advance_by=advance_by - len(self._ahead))
            self._ahead.clear()
            reply = self._call(request, request.timeout + REPLY_MARGIN)
            self._ahead.extend(_record_sets(*self._data(reply)))
            self._used = {}
            advance_by = 1  # the server skipped the others
        for _ in range(advance_by):
            rs = self._ahead.popleft()
            for stream in rs.entries:
                self._used[stream] = self._used.get(stream, 0) + 1
        return rs

    def _pop_set(self) -> RecordSet:
        rs = self._ahead.popleft()
        for stream in rs.entries:
            self._used[stream] = self._used.get(stream, 0) + 1
        if not self._ahead and self._stream is not None and self._stream.sets:
            self._used = {}
            self._stream.used_one()  # every set of that reply handed out
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
        request = _request(NextBatch, int(max_records), float(timeout))
        sub = self._sub
        if self.window < 1 or sub is None or sub.keep_up.value == "record" or sub.sync:
            self._give_back()
            reply = self._call(request, request.timeout + REPLY_MARGIN)
            return _record_batch(*self._data(reply))
        stream = self._stream
        if stream is None or stream.params != (request.max_records, request.timeout, 0):
            self._give_back()
            stream = self._stream = BatchStream(self, request.max_records, request.timeout, self.window)
        return _record_batch(*self._data(stream.next(REPLY_MARGIN)))

    def go_to_file(self, name: str) -> str:
        """Continue at entry 0 of data file ``name``. Raises DDSError(NO_FILE) for unknown or outside names."""
        self._end_stream()
        reply = self._call(GoToFile(str(name)), 60.0)
        self._ahead.clear()  # only after the move: a refused one keeps the position and these sets
        return reply.info.get("file", name)

    def go_to_next_file(self, timeout: float = 120.0) -> str:
        """Continue at entry 0 of the file after the current one, waiting for it to appear."""
        request = _request(GoToNextFile, float(timeout))
        self._end_stream()
        reply = self._call(request, request.timeout + REPLY_MARGIN)
        self._ahead.clear()
        return reply.info.get("file", "")

    def _data(self, reply: Message) -> tuple[list[Part], Layout | None]:
        """The parts of a data reply and its layout, checked; a malformed one ends the session."""
        if not isinstance(reply, Data):
            raise DDSError(f"expected record data from {self.address}, got {reply.TYPE!r}", MessageType.PROTOCOL_ERROR)
        try:
            parts = decode_parts(reply)
            return parts, from_info(reply.header.get("info"), len(parts))
        except ProtocolError as exc:
            self._drop()
            raise DDSError(str(exc), MessageType.PROTOCOL_ERROR) from None


def _request(cls: type[M], *args: object) -> M:
    """Build a request; a value out of range fails here, before anything is sent."""
    try:
        return cls(*args)
    except InvalidMessage as exc:
        raise DDSError(str(exc), MessageType.BAD_SUBSCRIPTION) from None


def _record_sets(parts: list[Part], layout: Layout | None) -> list[RecordSet]:
    if isinstance(layout, OrderLayout):  # single-record sets sent ahead: set i is the next row of part order[i]
        rows = [p.arrays.to_list() for p in parts]
        used = [0] * len(parts)
        out = []
        for i in layout.order:
            p, r = parts[i], used[i]
            used[i] += 1
            out.append(RecordSet(p.file, {p.stream: rows[i][r]}, {p.stream: int(p.entries[r])},
                                 unserved=_unserved([p])))
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
        out.append(RecordSet(s.file, records, entries, s.missing, unserved=_unserved(members)))
    return out


def _record_batch(parts: list[Part], layout: Layout | None) -> RecordBatch:
    if layout is None:
        p = parts[0]
        return RecordBatch(p.stream, p.file, p.entries, p.arrays, unserved=_unserved([p]))
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
    return RecordBatch(None, file, entries, ak.zip(fields, depth_limit=1), unserved=_unserved(parts))


def _unserved(parts: list[Part]) -> dict[str, dict[str, str]]:
    """``{stream: {branch: why}}``: what the file's streams hold that the server cannot serve."""
    return {p.stream: dict(p.unserved) for p in parts if p.unserved}
