"""The DDS wire protocol, sans-IO: bytes in, messages out, and back.

No sockets here. The parent, the child session and the client SDK all drive the
same :class:`Connection` object; tests drive it with plain bytes.

A frame is ``!II`` (header length, body length) followed by a UTF-8 JSON object
(the header, always with a ``"type"``) and a binary body (column buffers of
record data, empty for every other message). Both lengths are checked against
hard limits before a single byte of the frame is buffered, so a peer cannot make
us allocate more than the limit. Nothing a peer sends is ever unpickled or
evaluated: headers are JSON, checked field by field against the message's
declared types. Each message checks its own values when built (one place for
every range check): a client cannot build a request out of range, and a server
receives one as an :class:`InvalidRequest` to answer.

The conversation is request/response: the client sends ``Hello`` and then one
request at a time; the server answers each with exactly one reply (``Welcome``,
``Ok``, ``Error`` or ``Data``). The one exception is a stream of batches
(``StreamBatches``): the server keeps sending ``Data`` replies while it holds
credits (``window`` at the start, one more per ``Credit`` the client sends as it
consumes a reply), until an ``Error`` ends it or the client's ``EndStream`` is
answered with ``Ok``. The only unsolicited message is an ``Error`` with code
``SHUTDOWN``, after which the server closes. Which message
may come in which :class:`State` is the one table :data:`TRANSITIONS`. See
docs/PROTOCOL.md.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import reprlib
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

PROTOCOL_VERSION = 1

PREFIX = struct.Struct("!II")

#: Limits for frames a server accepts from a client (control messages only).
CLIENT_MAX_HEADER = 64 * 1024
CLIENT_MAX_BODY = 0
#: Limits for frames a client accepts from a server (record data).
SERVER_MAX_HEADER = 16 * 1024 * 1024
SERVER_MAX_BODY = 1024 * 1024 * 1024


class MessageType(str, enum.Enum):
    """Outcome of a request; every ``DDSError`` carries one.

    A ``str`` enum: ``MessageType.OK == "OK"``, which is also how it travels.
    """

    OK = "OK"
    TIMEOUT = "TIMEOUT"
    NO_FILE = "NO_FILE"
    BAD_SUBSCRIPTION = "BAD_SUBSCRIPTION"
    BAD_SELECTION = "BAD_SELECTION"
    SERVER_BUSY = "SERVER_BUSY"
    SHUTDOWN = "SHUTDOWN"
    PROTOCOL_ERROR = "PROTOCOL_ERROR"
    SERVER_ERROR = "SERVER_ERROR"
    FORBIDDEN = "FORBIDDEN"

    def as_string(self) -> str:
        return _AS_STRING[self]


_AS_STRING = {
    MessageType.OK: "OK: request completed",
    MessageType.TIMEOUT: "TIMEOUT: no record set satisfying the subscription within the wait time",
    MessageType.NO_FILE: "NO_FILE: no such file in the data directory",
    MessageType.BAD_SUBSCRIPTION: "BAD_SUBSCRIPTION: the subscription was rejected",
    MessageType.BAD_SELECTION: "BAD_SELECTION: the selection expression was rejected",
    MessageType.SERVER_BUSY: "SERVER_BUSY: the server has its maximum number of clients",
    MessageType.SHUTDOWN: "SHUTDOWN: the server is shutting down",
    MessageType.PROTOCOL_ERROR: "PROTOCOL_ERROR: malformed or unexpected message",
    MessageType.SERVER_ERROR: "SERVER_ERROR: internal server error",
    MessageType.FORBIDDEN: "FORBIDDEN: not allowed from this client",
}


class ProtocolError(Exception):
    """A violation of the protocol; the connection cannot continue."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed, oversized or out of order."""


class LocalProtocolError(ProtocolError):
    """We tried to send something the current state does not allow."""


# --------------------------------------------------------------------------- messages

#: longest wait a request may ask for, in seconds (a week)
MAX_TIMEOUT = 7 * 24 * 3600.0
#: most records (or record sets) one reply may be asked for
MAX_BATCH = 1_000_000
#: most replies a stream of batches may have on the way at once
MAX_WINDOW = 16
#: most record sets ``next`` may skip at once
MAX_ADVANCE = 1_000_000_000


class InvalidMessage(ValueError):
    """A message's values are out of range; the message says which field and what is allowed."""


def _count(value: int, name: str, hi: int) -> None:
    if not 1 <= value <= hi:
        raise InvalidMessage(f"{name} must be between 1 and {hi}, not {_quote(value)}")


def _seconds(value: float, name: str) -> float:
    # a comparison, not math.isfinite: NaN fails it too, and isfinite(10**400) would overflow
    if not 0 <= value <= MAX_TIMEOUT:
        raise InvalidMessage(f"{name} must be between 0 and {MAX_TIMEOUT:g} seconds, not {_quote(value)}")
    return float(value)


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""


@dataclass(frozen=True)
class Hello(Message):
    TYPE: ClassVar[str] = "hello"
    protocol: int
    client: str = ""
    role: str = "client"  # "client" for a data session, "admin" for ddscomm
    token: str = ""
    # codec for record data ("zstd", "lz4"); "" for none, then not sent (servers before it refuse unknown fields)
    compression: str = field(default="", metadata={"omit_empty": True})


@dataclass(frozen=True)
class Welcome(Message):
    TYPE: ClassVar[str] = "welcome"
    protocol: int
    server: str
    pid: int
    compression: str = field(default="", metadata={"omit_empty": True})  # the codec agreed: the one asked for


@dataclass(frozen=True)
class Subscribe(Message):
    TYPE: ClassVar[str] = "subscribe"
    subscription: dict


@dataclass(frozen=True)
class Next(Message):
    """The next record set: wait up to ``timeout`` s, skip ``advance_by - 1`` sets, send up to ``prefetch``."""

    TYPE: ClassVar[str] = "next"
    timeout: float
    advance_by: int = 1
    prefetch: int = 1  # send up to this many sets ready now, so the client need not ask for each

    def __post_init__(self) -> None:
        object.__setattr__(self, "timeout", _seconds(self.timeout, "timeout"))
        _count(self.advance_by, "advance_by", MAX_ADVANCE)
        _count(self.prefetch, "prefetch", MAX_BATCH)


@dataclass(frozen=True)
class Rewind(Message):
    """The client used only ``consumed[stream]`` records of each stream of the last prefetched
    reply; the server serves the rest again (they may not pass a new subscription)."""

    TYPE: ClassVar[str] = "rewind"
    file: str
    consumed: dict


@dataclass(frozen=True)
class Leave(Message):
    """The client is closing: everything it was handed is acknowledged, except, when ``file`` is given,
    the records of the last prefetched reply beyond ``consumed[stream]`` of each stream (never handed
    to the user). Answered ``ok``; the client then closes."""

    TYPE: ClassVar[str] = "leave"
    file: str = ""
    consumed: dict = field(default_factory=dict)


@dataclass(frozen=True)
class NextBatch(Message):
    TYPE: ClassVar[str] = "next_batch"
    max_records: int
    timeout: float

    def __post_init__(self) -> None:
        _count(self.max_records, "max_records", MAX_BATCH)
        object.__setattr__(self, "timeout", _seconds(self.timeout, "timeout"))


@dataclass(frozen=True)
class StreamBatches(Message):
    """Batches as ``next_batch`` would return them, one after the other, up to ``window`` unconsumed at once.

    The server waits up to ``timeout`` s (from the client's last message) for each one; an
    ``Error`` ends the stream (``TIMEOUT`` among them), an ``EndStream`` too.
    """

    TYPE: ClassVar[str] = "stream_batches"
    max_records: int
    timeout: float
    window: int = 2
    sets: int = 0  # > 0: each reply is up to this many single-record sets, as ``next`` with ``prefetch``

    def __post_init__(self) -> None:
        _count(self.max_records, "max_records", MAX_BATCH)
        object.__setattr__(self, "timeout", _seconds(self.timeout, "timeout"))
        _count(self.window, "window", MAX_WINDOW)
        if self.sets:
            _count(self.sets, "sets", MAX_BATCH)


@dataclass(frozen=True)
class Credit(Message):
    """The client consumed ``count`` more replies of the stream: the server may send as many more."""

    TYPE: ClassVar[str] = "credit"
    count: int = 1

    def __post_init__(self) -> None:
        _count(self.count, "count", MAX_WINDOW)


@dataclass(frozen=True)
class EndStream(Message):
    """End the stream: the client consumed the first ``consumed`` replies, and of the next one (a reply of
    sets) ``partial[stream]`` records of each stream; the server serves the rest again."""

    TYPE: ClassVar[str] = "end_stream"
    consumed: int
    partial: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.consumed <= MAX_ADVANCE:
            raise InvalidMessage(f"consumed must be between 0 and {MAX_ADVANCE}, not {_quote(self.consumed)}")
        for k, v in self.partial.items():
            if not isinstance(k, str) or not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_BATCH:
                raise InvalidMessage(f"partial must map streams to counts 0..{MAX_BATCH}, not {_quote(self.partial)}")


@dataclass(frozen=True)
class GoToFile(Message):
    TYPE: ClassVar[str] = "go_to_file"
    name: str


@dataclass(frozen=True)
class GoToNextFile(Message):
    TYPE: ClassVar[str] = "go_to_next_file"
    timeout: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "timeout", _seconds(self.timeout, "timeout"))


@dataclass(frozen=True)
class Stop(Message):
    """Admin request: stop the parent server (ddscomm -s)."""

    TYPE: ClassVar[str] = "stop"


@dataclass(frozen=True)
class Status(Message):
    """Admin request: the server's status and a row per client (ddscomm --status)."""

    TYPE: ClassVar[str] = "status"


@dataclass(frozen=True)
class InvalidRequest(Message):
    """A well-formed request with a value out of range, as the server receives it.

    Never on the wire: :class:`Connection` hands it out in place of the request,
    so the server can answer ``BAD_SUBSCRIPTION`` and go on (a malformed frame,
    by contrast, ends the conversation).

    Args:
        request (str): the type of the request refused (``"next"``...).
        reason (str): what was out of range, as the request's constructor said.
    """

    TYPE: ClassVar[str] = "invalid_request"
    request: str
    reason: str


@dataclass(frozen=True)
class Ok(Message):
    TYPE: ClassVar[str] = "ok"
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Error(Message):
    """An error reply. ``code`` may be given by name; a name this side does not know reads as ``SERVER_ERROR``."""

    TYPE: ClassVar[str] = "error"
    code: MessageType
    message: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.code, MessageType):
            try:
                code = MessageType(self.code)
            except ValueError:
                code = MessageType.SERVER_ERROR
            object.__setattr__(self, "code", code)

    @property
    def message_type(self) -> MessageType:
        return self.code


@dataclass(frozen=True)
class Data(Message):
    """Record data: ``header`` describes the column buffers held in ``body``."""

    TYPE: ClassVar[str] = "data"
    header: dict
    body: Any = b""  # bytes-like; a list of bytes-like chunks when sending


#: what a client sends about a running stream of batches (a credit is never answered, end_stream by ``ok``)
STREAM_CONTROL = (Credit, EndStream)
REQUESTS = (Subscribe, Next, Rewind, Leave, NextBatch, GoToFile, GoToNextFile, Stop, Status, StreamBatches,
            *STREAM_CONTROL)
REPLIES = (Welcome, Ok, Error, Data)
_BY_TYPE: dict[str, type[Message]] = {cls.TYPE: cls for cls in (Hello, *REQUESTS, *REPLIES)}

#: JSON types a field of each declared type accepts, and the name an error uses for it
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "int"),
    "float": ((int, float), "float"),
    "str": ((str,), "str"),
    "dict": ((dict,), "dict"),
    "MessageType": ((str,), "str"),
    "Any": ((object,), "Any"),
}


def _quote(value: object) -> str:
    """A peer's value in an error message, cut short: errors go to logs and back to the peer."""
    return reprlib.repr(value)


#: the same, for the modules that answer a peer
quote = _quote


def _decode_message(header: dict, body: memoryview, role: str) -> Message:
    kind = header.get("type")
    cls = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {_quote(kind)}")
    if cls is Data:
        return Data(header=header, body=body)
    if len(body):
        raise RemoteProtocolError(f"message {kind!r} must not carry a body")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in header:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RemoteProtocolError(f"message {kind!r} lacks field {f.name!r}")
            continue
        value = header[f.name]
        allowed, wire_name = _FIELD_TYPES[str(f.type)]
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise RemoteProtocolError(f"field {f.name!r} of message {kind!r} must be {wire_name}, "
                                      f"got {type(value).__name__}")
        kwargs[f.name] = value
    unknown = set(header) - {"type"} - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise RemoteProtocolError(f"message {kind!r} has unknown fields {_quote(sorted(unknown))}")
    try:
        return cls(**kwargs)
    except InvalidMessage as exc:
        if role == "server" and cls in REQUESTS:
            return InvalidRequest(cls.TYPE, str(exc))
        raise RemoteProtocolError(f"message {kind!r}: {exc}") from None


def _header_value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def encode(message: Message) -> list:
    """The frame for ``message`` as a list of bytes-like chunks (no copy of data buffers)."""
    if isinstance(message, Data):
        header = dict(message.header, type=Data.TYPE)
        chunks = message.body if isinstance(message.body, list) else [message.body]
    elif isinstance(message, InvalidRequest):
        raise LocalProtocolError(f"an invalid {message.request!r} request is never sent")
    else:
        header = {"type": message.TYPE}
        header.update((f.name, _header_value(getattr(message, f.name))) for f in dataclasses.fields(message)
                      if not (f.metadata.get("omit_empty") and getattr(message, f.name) == ""))
        chunks = []
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    body_len = sum(memoryview(c).nbytes for c in chunks)
    return [PREFIX.pack(len(head), body_len) + head, *chunks]


# --------------------------------------------------------------------------- framing


def _no_constant(name):
    raise ValueError(f"{name} is not allowed")


class FrameDecoder:
    """Reassembles frames from a byte stream, refusing anything over the limits."""

    def __init__(self, max_header: int, max_body: int):
        self.max_header = max_header
        self.max_body = max_body
        self._buf = bytearray()
        self._need: tuple[int, int] | None = None
        self._frame: bytearray | None = None  # the current frame, received in place (see reserve)
        self._filled = 0

    def feed(self, data: bytes) -> None:
        if self._frame is not None:
            k = min(len(data), len(self._frame) - self._filled)
            self._frame[self._filled : self._filled + k] = data[:k]
            self._filled += k
            data = data[k:]
            if not data:
                return
        self._buf += data
        if self._frame is None:
            self._check_prefix()

    def reserve(self) -> memoryview | None:
        """Where the rest of the current frame goes, to receive it in place (``recv_into``); None when its
        size is not known yet or it is complete. Call :meth:`filled` with the bytes written."""
        if self._frame is None:
            if self._need is None:
                return None
            total = PREFIX.size + sum(self._need)
            if len(self._buf) >= total:
                return None
            self._frame = bytearray(total)
            self._frame[: len(self._buf)] = self._buf
            self._filled = len(self._buf)
            self._buf = bytearray()
        return memoryview(self._frame)[self._filled :]

    def filled(self, n: int) -> None:
        if self._frame is None or not 0 <= n <= len(self._frame) - self._filled:
            raise ValueError("filled() without room reserved for that many bytes")
        self._filled += n

    def _check_prefix(self) -> None:
        if self._need is None and len(self._buf) >= PREFIX.size:
            hlen, blen = PREFIX.unpack_from(self._buf)
            if hlen == 0 or hlen > self.max_header:
                raise RemoteProtocolError(f"frame header of {hlen} bytes (limit {self.max_header})")
            if blen > self.max_body:
                raise RemoteProtocolError(f"frame body of {blen} bytes (limit {self.max_body})")
            self._need = (hlen, blen)

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as frames."""
        return len(self._buf)

    @property
    def bytes_wanted(self) -> int:
        """How many more bytes complete the current frame (at least 1)."""
        if self._frame is not None:
            return max(1, len(self._frame) - self._filled)
        if self._need is None:
            return max(1, PREFIX.size - len(self._buf))
        return max(1, PREFIX.size + sum(self._need) - len(self._buf))

    def next_frame(self) -> tuple[dict, memoryview] | None:
        if self._need is None:
            return None
        hlen, blen = self._need
        total = PREFIX.size + hlen + blen
        frame: bytes | bytearray
        if self._frame is not None:
            if self._filled < total:
                return None
            frame, self._frame = self._frame, None
        elif len(self._buf) < total:
            return None
        else:
            frame = bytes(self._buf[:total]) if len(self._buf) > total else self._buf
            self._buf = self._buf[total:] if len(self._buf) > total else bytearray()
        self._need = None
        self._check_prefix()
        view = memoryview(frame)
        try:
            text = bytes(view[PREFIX.size : PREFIX.size + hlen]).decode("utf-8")
            header = json.loads(text, parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise RemoteProtocolError(f"frame header is not valid UTF-8 JSON: {exc}") from None
        if not isinstance(header, dict):
            raise RemoteProtocolError("frame header is not a JSON object")
        return header, view[PREFIX.size + hlen :]


# --------------------------------------------------------------------------- state machine


class State(str, enum.Enum):
    """Where one side of the conversation is."""

    AWAIT_HELLO = "AWAIT_HELLO"
    HELLO_SENT = "HELLO_SENT"
    IDLE = "IDLE"
    BUSY = "BUSY"  # a request is outstanding
    STREAMING = "STREAMING"  # a stream of batches runs
    ENDING = "ENDING"  # the client asked the stream to end; replies still on the way are dropped
    CLOSED = "CLOSED"


AWAIT_HELLO = State.AWAIT_HELLO
HELLO_SENT = State.HELLO_SENT
IDLE = State.IDLE
BUSY = State.BUSY
STREAMING = State.STREAMING
ENDING = State.ENDING
CLOSED = State.CLOSED

SEND = "send"
RECEIVE = "receive"


def _event(message: Message) -> str:
    """What a message is called in the transitions table: its type, an error also by its code."""
    if isinstance(message, InvalidRequest):
        return message.request  # a request all the same: it is answered
    if isinstance(message, Error):
        return f"error {message.code.value}"
    return message.TYPE


def _errors(*codes: MessageType) -> list[str]:
    """The events of an error reply with one of ``codes`` (none given: any code)."""
    return [f"error {code.value}" for code in codes or MessageType]


_REQUEST_EVENTS = [cls.TYPE for cls in REQUESTS if cls not in STREAM_CONTROL]
_CLOSING = (MessageType.SHUTDOWN, MessageType.PROTOCOL_ERROR)

#: (role, direction, state, event) -> next state; anything not here is a protocol error
TRANSITIONS: dict[tuple[str, str, State, str], State] = {
    ("client", SEND, AWAIT_HELLO, "hello"): HELLO_SENT,
    **{("client", SEND, IDLE, e): BUSY for e in _REQUEST_EVENTS},
    ("client", RECEIVE, HELLO_SENT, "welcome"): IDLE,
    **{("client", RECEIVE, HELLO_SENT, e): CLOSED for e in _errors()},  # a refusal
    **{("client", RECEIVE, BUSY, e): IDLE for e in ["ok", "data", *_errors()]},
    # a stream of batches: data replies while credits last; an error ends it, so does end_stream (answered ok)
    ("client", SEND, IDLE, "stream_batches"): STREAMING,
    ("client", SEND, STREAMING, "credit"): STREAMING,
    ("client", SEND, STREAMING, "end_stream"): ENDING,
    ("client", RECEIVE, STREAMING, "data"): STREAMING,
    **{("client", RECEIVE, STREAMING, e): IDLE for e in _errors()},
    **{("client", RECEIVE, ENDING, e): ENDING for e in ["data", *_errors()]},
    ("client", RECEIVE, ENDING, "ok"): IDLE,
    # the server may announce its shutdown at any time
    **{("client", RECEIVE, st, e): CLOSED for st in State for e in _errors(MessageType.SHUTDOWN)},
    ("server", RECEIVE, AWAIT_HELLO, "hello"): BUSY,
    **{("server", RECEIVE, IDLE, e): BUSY for e in _REQUEST_EVENTS},
    **{("server", SEND, BUSY, e): IDLE for e in ["welcome", "ok", "data", *_errors()]},
    **{("server", SEND, AWAIT_HELLO, e): CLOSED for e in _errors()},  # refusing before the hello arrived
    ("server", RECEIVE, IDLE, "stream_batches"): STREAMING,
    ("server", RECEIVE, STREAMING, "credit"): STREAMING,
    ("server", SEND, STREAMING, "data"): STREAMING,
    **{("server", SEND, STREAMING, e): IDLE for e in _errors()},
    ("server", RECEIVE, STREAMING, "end_stream"): BUSY,
    # the server ended the stream (an error) while the client's credits or end_stream were on the way
    ("server", RECEIVE, IDLE, "credit"): IDLE,
    ("server", RECEIVE, IDLE, "end_stream"): BUSY,
    # a shutdown or a protocol error ends the conversation, whatever state it is in
    **{("server", SEND, st, e): CLOSED for st in State for e in _errors(*_CLOSING)},
}


class Connection:
    """One side of a DDS conversation.

    Args:
        role (str): ``"server"`` or ``"client"``.
    """

    def __init__(self, role: str):
        if role not in ("server", "client"):
            raise ValueError(f"role must be 'server' or 'client', not {role!r}")
        self.role = role
        self.state = AWAIT_HELLO
        if role == "server":
            self._decoder = FrameDecoder(CLIENT_MAX_HEADER, CLIENT_MAX_BODY)
        else:
            self._decoder = FrameDecoder(SERVER_MAX_HEADER, SERVER_MAX_BODY)

    @property
    def bytes_wanted(self) -> int:
        return self._decoder.bytes_wanted

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out as messages."""
        return self._decoder.buffered

    def receive_data(self, data: bytes) -> None:
        if self.state == CLOSED:
            raise RemoteProtocolError("data after the connection was closed")
        self._decoder.feed(data)

    def receive_buffer(self) -> memoryview | None:
        """A writable view for the rest of the frame being received (None: use receive_data).

        For large frames: ``n = sock.recv_into(view)`` then :meth:`received` ``(n)`` saves the copy
        of every chunk into a growing buffer and of the whole frame out of it.
        """
        if self.state == CLOSED:
            return None
        return self._decoder.reserve()

    def received(self, n: int) -> None:
        self._decoder.filled(n)

    def next_message(self) -> Message | None:
        """The next whole message received, or None.

        On the server side, a request with a value out of range comes out as an
        :class:`InvalidRequest`, to be answered with an error.
        """
        frame = self._decoder.next_frame()
        if frame is None:
            return None
        msg = _decode_message(*frame, role=self.role)
        self.state = self._transition(RECEIVE, msg)
        return msg

    def send(self, message: Message) -> list:
        """The frame for ``message``; raises LocalProtocolError when the state does not allow it."""
        nxt = self._transition(SEND, message)
        frame = encode(message)
        self.state = nxt
        return frame

    def _transition(self, direction: str, msg: Message) -> State:
        state = State(self.state)
        nxt = TRANSITIONS.get((self.role, direction, state, _event(msg)))
        if nxt is not None:
            return nxt
        what = msg.request if isinstance(msg, InvalidRequest) else msg.TYPE
        if direction == RECEIVE:
            raise RemoteProtocolError(f"unexpected {what!r} message in state {state.value}")
        raise LocalProtocolError(f"cannot send {what!r} in state {state.value}")
