"""The DDS wire protocol, sans-IO: bytes in, messages out, and back.

No sockets here. The parent, the child session and the client SDK all drive the
same :class:`Connection` object; tests drive it with plain bytes.

A frame is ``!II`` (header length, body length) followed by a UTF-8 JSON object
(the header, always with a ``"type"``) and a binary body (column buffers of
record data, empty for every other message). Both lengths are checked against
hard limits before a single byte of the frame is buffered, so a peer cannot make
us allocate more than the limit. Nothing a peer sends is ever unpickled or
evaluated: headers are JSON, checked field by field against the message's
declared types.

The conversation is strictly request/response: the client sends ``Hello`` and
then one request at a time; the server answers each with exactly one reply
(``Welcome``, ``Ok``, ``Error`` or ``Data``). The only unsolicited message is an
``Error`` with code ``SHUTDOWN``, after which the server closes. See
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


class MessageType(enum.Enum):
    """Outcome of a request; every ``DDSError`` carries one."""

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


@dataclass(frozen=True)
class Welcome(Message):
    TYPE: ClassVar[str] = "welcome"
    protocol: int
    server: str
    pid: int


@dataclass(frozen=True)
class Subscribe(Message):
    TYPE: ClassVar[str] = "subscribe"
    subscription: dict


@dataclass(frozen=True)
class Next(Message):
    TYPE: ClassVar[str] = "next"
    timeout: float
    advance_by: int = 1
    prefetch: int = 1  # send up to this many sets ready now, so the client need not ask for each


@dataclass(frozen=True)
class Rewind(Message):
    """The client used only ``consumed[stream]`` records of each stream of the last prefetched
    reply; the server serves the rest again (they may not pass a new subscription)."""

    TYPE: ClassVar[str] = "rewind"
    file: str
    consumed: dict


@dataclass(frozen=True)
class NextBatch(Message):
    TYPE: ClassVar[str] = "next_batch"
    max_records: int
    timeout: float


@dataclass(frozen=True)
class GoToFile(Message):
    TYPE: ClassVar[str] = "go_to_file"
    name: str


@dataclass(frozen=True)
class GoToNextFile(Message):
    TYPE: ClassVar[str] = "go_to_next_file"
    timeout: float


@dataclass(frozen=True)
class Stop(Message):
    """Admin request: stop the parent server (ddscomm -s)."""

    TYPE: ClassVar[str] = "stop"


@dataclass(frozen=True)
class Ok(Message):
    TYPE: ClassVar[str] = "ok"
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Error(Message):
    TYPE: ClassVar[str] = "error"
    code: str
    message: str = ""

    @property
    def message_type(self) -> MessageType:
        try:
            return MessageType(self.code)
        except ValueError:
            return MessageType.SERVER_ERROR


@dataclass(frozen=True)
class Data(Message):
    """Record data: ``header`` describes the column buffers held in ``body``."""

    TYPE: ClassVar[str] = "data"
    header: dict
    body: Any = b""  # bytes-like; a list of bytes-like chunks when sending


REQUESTS = (Subscribe, Next, Rewind, NextBatch, GoToFile, GoToNextFile, Stop)
REPLIES = (Welcome, Ok, Error, Data)
_BY_TYPE = {cls.TYPE: cls for cls in (Hello, *REQUESTS, *REPLIES)}

_FIELD_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "dict": (dict,), "Any": (object,)}


def _quote(value) -> str:
    """A peer's value in an error message, cut short: errors go to logs and back to the peer."""
    return reprlib.repr(value)


def _decode_message(header: dict, body: memoryview) -> Message:
    kind = header.get("type")
    cls = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {_quote(kind)}")
    if cls is Data:
        return Data(header=header, body=body)
    if len(body):
        raise RemoteProtocolError(f"message {kind!r} must not carry a body")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in header:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RemoteProtocolError(f"message {kind!r} lacks field {f.name!r}")
            continue
        value = header[f.name]
        allowed = _FIELD_TYPES[f.type]
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise RemoteProtocolError(f"field {f.name!r} of message {kind!r} must be {f.type}, got {type(value).__name__}")
        kwargs[f.name] = value
    unknown = set(header) - {"type"} - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise RemoteProtocolError(f"message {kind!r} has unknown fields {_quote(sorted(unknown))}")
    return cls(**kwargs)


def encode(message: Message) -> list:
    """The frame for ``message`` as a list of bytes-like chunks (no copy of data buffers)."""
    if isinstance(message, Data):
        header = dict(message.header, type=Data.TYPE)
        chunks = message.body if isinstance(message.body, list) else [message.body]
    else:
        header = {"type": message.TYPE, **dataclasses.asdict(message)}
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

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._check_prefix()

    def _check_prefix(self) -> None:
        if self._need is None and len(self._buf) >= PREFIX.size:
            hlen, blen = PREFIX.unpack_from(self._buf)
            if hlen == 0 or hlen > self.max_header:
                raise RemoteProtocolError(f"frame header of {hlen} bytes (limit {self.max_header})")
            if blen > self.max_body:
                raise RemoteProtocolError(f"frame body of {blen} bytes (limit {self.max_body})")
            self._need = (hlen, blen)

    @property
    def bytes_wanted(self) -> int:
        """How many more bytes complete the current frame (at least 1)."""
        if self._need is None:
            return max(1, PREFIX.size - len(self._buf))
        return max(1, PREFIX.size + sum(self._need) - len(self._buf))

    def next_frame(self) -> tuple[dict, memoryview] | None:
        if self._need is None:
            return None
        hlen, blen = self._need
        total = PREFIX.size + hlen + blen
        if len(self._buf) < total:
            return None
        frame = bytes(self._buf[:total]) if len(self._buf) > total else self._buf
        self._buf = self._buf[total:] if len(self._buf) > total else bytearray()
        self._need = None
        self._check_prefix()
        view = memoryview(frame)
        try:
            header = json.loads(bytes(view[PREFIX.size : PREFIX.size + hlen]).decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise RemoteProtocolError(f"frame header is not valid UTF-8 JSON: {exc}") from None
        if not isinstance(header, dict):
            raise RemoteProtocolError("frame header is not a JSON object")
        return header, view[PREFIX.size + hlen :]


# --------------------------------------------------------------------------- state machine

AWAIT_HELLO = "AWAIT_HELLO"
HELLO_SENT = "HELLO_SENT"
IDLE = "IDLE"
BUSY = "BUSY"  # a request is outstanding
CLOSED = "CLOSED"


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

    def receive_data(self, data: bytes) -> None:
        if self.state == CLOSED:
            raise RemoteProtocolError("data after the connection was closed")
        self._decoder.feed(data)

    def next_message(self) -> Message | None:
        frame = self._decoder.next_frame()
        if frame is None:
            return None
        msg = _decode_message(*frame)
        self._on_receive(msg)
        return msg

    def send(self, message: Message) -> list:
        self._on_send(message)
        return encode(message)

    # Transitions live here, in one place per side.
    def _on_receive(self, msg: Message) -> None:
        st = self.state
        if self.role == "server":
            if st == AWAIT_HELLO and isinstance(msg, Hello):
                self.state = BUSY
            elif st == IDLE and isinstance(msg, REQUESTS):
                self.state = BUSY
            else:
                raise RemoteProtocolError(f"unexpected {msg.TYPE!r} message in state {st}")
        else:
            if isinstance(msg, Error) and msg.code == MessageType.SHUTDOWN.value:
                self.state = CLOSED
            elif st == HELLO_SENT and isinstance(msg, (Welcome, Error)):
                self.state = IDLE if isinstance(msg, Welcome) else CLOSED
            elif st == BUSY and isinstance(msg, (Ok, Error, Data)):
                self.state = IDLE
            else:
                raise RemoteProtocolError(f"unexpected {msg.TYPE!r} message in state {st}")

    def _on_send(self, msg: Message) -> None:
        st = self.state
        if self.role == "client":
            if st == AWAIT_HELLO and isinstance(msg, Hello):
                self.state = HELLO_SENT
            elif st == IDLE and isinstance(msg, REQUESTS):
                self.state = BUSY
            else:
                raise LocalProtocolError(f"cannot send {msg.TYPE!r} in state {st}")
        else:
            if isinstance(msg, Error) and msg.code in (MessageType.SHUTDOWN.value, MessageType.PROTOCOL_ERROR.value):
                self.state = CLOSED
            elif st == BUSY and isinstance(msg, REPLIES):
                self.state = IDLE
            elif st == AWAIT_HELLO and isinstance(msg, Error):
                # refusing before the hello arrived (server busy, not allowed)
                self.state = CLOSED
            else:
                raise LocalProtocolError(f"cannot send {msg.TYPE!r} in state {st}")
