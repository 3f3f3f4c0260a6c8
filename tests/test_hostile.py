"""Hostile and malformed input against a real ddsparentserver.

Each test sends something a well-behaved client never would, over a raw socket,
and checks four things: the server answers with the matching error (or closes),
within a bounded time, says so in its log, and afterwards still serves a normal
client. One server serves the whole module (it must survive all of it); tests
that need other options start their own.
"""

from __future__ import annotations

import json
import os
import random
import socket
import ssl
import struct
import time

import pytest

from clients import DDSClient, DDSError, MessageType, Subscription
from conftest import Server, snarl_data, write_file
from dispatcher.protocol import (
    PREFIX,
    PROTOCOL_VERSION,
    SERVER_MAX_BODY,
    SERVER_MAX_HEADER,
    Connection,
    Error,
    FrameDecoder,
    GoToFile,
    Hello,
    Next,
    Ok,
    Subscribe,
    Welcome,
)
from dispatcher.transport import recv_message, send_message

ANSWER_SECONDS = 5.0  # every reply or close must come within this

# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    """One server for the module, with short handshake and idle limits."""
    base = tmp_path_factory.mktemp("hostile")
    data = base / "data"
    data.mkdir()
    write_file(data / "F00000001_0000.mdaq.root", {"DaqSnarl": snarl_data(0, 50)})
    outside = base / "outside"
    outside.mkdir()
    write_file(outside / "secret.root", {"DaqSnarl": snarl_data(1000, 5)})
    os.symlink(outside / "secret.root", data / "link.root")
    server = Server(data, "--handshake-timeout", "1", "--idle-timeout", "3")
    try:
        yield server
    finally:
        assert server.stop() == 0


def frame(header, body: bytes = b"") -> bytes:
    """One frame; ``header`` a dict (JSON-encoded here) or raw bytes."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return PREFIX.pack(len(head), len(body)) + head + body


def hello(**fields) -> dict:
    return {"type": "hello", "protocol": PROTOCOL_VERSION, "client": "hostile", **fields}


def connect(server) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=ANSWER_SECONDS)
    sock.settimeout(ANSWER_SECONDS)
    return sock


def answer(sock) -> dict | None:
    """The server's next frame header, or None if it closed without one. Bounded in time."""
    decoder = FrameDecoder(SERVER_MAX_HEADER, SERVER_MAX_BODY)
    deadline = time.monotonic() + ANSWER_SECONDS
    while time.monotonic() < deadline:
        got = decoder.next_frame()
        if got is not None:
            return got[0]
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
        decoder.feed(data)
    raise AssertionError(f"no answer and no close within {ANSWER_SECONDS} s")


def closed(sock) -> bool:
    """True once the server closed the connection (read until EOF, bounded)."""
    deadline = time.monotonic() + ANSWER_SECONDS
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def send_and_answer(server, data: bytes) -> dict | None:
    with connect(server) as sock:
        sock.sendall(data)
        return answer(sock)


def assert_error(header, code: MessageType, *, contains: str = "") -> None:
    assert header is not None, f"server closed without the expected {code.value} answer"
    assert header["type"] == "error" and header["code"] == code.value, header
    assert contains in header["message"], header


def log_mark(server) -> int:
    return len(server.log)


def wait_for_log(server, mark: int, text: str, timeout: float = ANSWER_SECONDS) -> str:
    """The log written since ``mark``, once it contains ``text`` (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        new = server.log[mark:]
        if text in new:
            return new
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the server log; new lines:\n{new}")
        time.sleep(0.02)


def assert_still_serves(server) -> None:
    """A normal client still gets records, quickly."""
    start = time.monotonic()
    with DDSClient(server.host, server.port, connect_timeout=ANSWER_SECONDS) as dds:
        dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        rs = dds.next(timeout=ANSWER_SECONDS)
        assert rs.file == "F00000001_0000.mdaq.root"
        assert rs["DaqSnarl"]["evt"] == 0
    assert time.monotonic() - start < 2 * ANSWER_SECONDS
    assert server.proc.poll() is None


class Session:
    """A raw, well-formed conversation (after a real hello), to send odd requests in it."""

    def __init__(self, server):
        self.sock = connect(server)
        self.conn = Connection("client")
        send_message(self.sock, self.conn, Hello(PROTOCOL_VERSION, "hostile"))
        assert isinstance(recv_message(self.sock, self.conn, ANSWER_SECONDS), Welcome)

    def call(self, request):
        send_message(self.sock, self.conn, request)
        return recv_message(self.sock, self.conn, ANSWER_SECONDS)

    def close(self):
        self.sock.close()


@pytest.fixture
def session(hostile_server):
    s = Session(hostile_server)
    yield s
    s.close()


# ------------------------------------------------------------------ garbage before the hello


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bytes_get_a_protocol_error_and_the_server_goes_on(hostile_server, seed):
    mark = log_mark(hostile_server)
    junk = random.Random(seed).randbytes(4096)
    assert_error(send_and_answer(hostile_server, junk), MessageType.PROTOCOL_ERROR, contains="frame header of")
    wait_for_log(hostile_server, mark, "protocol error from")
    assert_still_serves(hostile_server)


def test_http_request_gets_a_protocol_error(hostile_server):
    mark = log_mark(hostile_server)
    # "GET " read as a big-endian header length is 0x47455420 = 1195725856 bytes
    got = send_and_answer(hostile_server, b"GET / HTTP/1.1\r\nHost: dds\r\n\r\n")
    assert_error(got, MessageType.PROTOCOL_ERROR, contains="frame header of 1195725856 bytes")
    wait_for_log(hostile_server, mark, "frame header of 1195725856 bytes")
    assert_still_serves(hostile_server)


def test_tls_client_hello_to_a_plain_server_gets_a_protocol_error(hostile_server):
    # A real ClientHello, made in memory: TLS record type 0x16, version 0x0301, then its length.
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    client_hello = outgoing.read()
    assert client_hello[:3] == b"\x16\x03\x01"
    hlen = PREFIX.unpack_from(client_hello)[0]
    mark = log_mark(hostile_server)
    assert_error(send_and_answer(hostile_server, client_hello), MessageType.PROTOCOL_ERROR,
                 contains=f"frame header of {hlen} bytes")
    wait_for_log(hostile_server, mark, "protocol error from")
    assert_still_serves(hostile_server)


def test_header_length_of_2_to_the_32_minus_1_is_refused_at_the_prefix(hostile_server):
    mark = log_mark(hostile_server)
    with connect(hostile_server) as sock:
        sock.sendall(PREFIX.pack(2**32 - 1, 0))  # the prefix alone: nothing of the frame is awaited
        assert_error(answer(sock), MessageType.PROTOCOL_ERROR, contains="frame header of 4294967295 bytes")
    wait_for_log(hostile_server, mark, "frame header of 4294967295 bytes (limit 65536)")
    assert_still_serves(hostile_server)


def test_body_length_of_2_to_the_32_minus_1_is_refused_at_the_prefix(hostile_server):
    mark = log_mark(hostile_server)
    head = json.dumps(hello()).encode()
    got = send_and_answer(hostile_server, struct.pack("!II", len(head), 2**32 - 1) + head)
    assert_error(got, MessageType.PROTOCOL_ERROR, contains="frame body of 4294967295 bytes")
    wait_for_log(hostile_server, mark, "frame body of 4294967295 bytes (limit 0)")
    assert_still_serves(hostile_server)


def test_length_of_2_to_the_60_written_as_64_bits_reads_as_a_2_to_the_28_header(hostile_server):
    # 2**60 does not fit the 32-bit length fields of the "!II" prefix. A peer that writes it
    # as one 64-bit big-endian length sends 10 00 00 00 00 00 00 00: we read a header length
    # of 0x10000000 = 2**28 = 268435456 bytes (refused, limit 64 KiB) and a body length of 0.
    prefix = struct.pack("!Q", 2**60)
    assert prefix == b"\x10\x00\x00\x00\x00\x00\x00\x00"
    assert PREFIX.unpack(prefix) == (2**28, 0)
    mark = log_mark(hostile_server)
    assert_error(send_and_answer(hostile_server, prefix), MessageType.PROTOCOL_ERROR,
                 contains="frame header of 268435456 bytes")
    wait_for_log(hostile_server, mark, "frame header of 268435456 bytes")
    assert_still_serves(hostile_server)


def test_frame_cut_off_mid_way_then_silence_meets_the_handshake_deadline(hostile_server):
    mark = log_mark(hostile_server)
    whole = frame(hello())
    start = time.monotonic()
    with connect(hostile_server) as sock:
        sock.sendall(whole[: len(whole) // 2])
        assert_error(answer(sock), MessageType.PROTOCOL_ERROR, contains="handshake timeout")
    took = time.monotonic() - start
    assert 0.5 < took < ANSWER_SECONDS  # --handshake-timeout 1
    wait_for_log(hostile_server, mark, "did not complete the handshake in 1.0 s")
    assert_still_serves(hostile_server)


def test_silent_connection_meets_the_handshake_deadline(hostile_server):
    mark = log_mark(hostile_server)
    with connect(hostile_server) as sock:
        assert_error(answer(sock), MessageType.PROTOCOL_ERROR, contains="handshake timeout")
    wait_for_log(hostile_server, mark, "did not complete the handshake")
    assert_still_serves(hostile_server)


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, -1, 2**31])
def test_wrong_protocol_version_is_refused_naming_both_versions(hostile_server, version):
    mark = log_mark(hostile_server)
    got = send_and_answer(hostile_server, frame(hello(protocol=version)))
    assert_error(got, MessageType.PROTOCOL_ERROR, contains=f"protocol version {version} not supported")
    assert f"speaks {PROTOCOL_VERSION}" in got["message"]
    wait_for_log(hostile_server, mark, f"speaks protocol {version}")
    assert_still_serves(hostile_server)


def test_request_before_hello_is_a_protocol_error(hostile_server):
    mark = log_mark(hostile_server)
    got = send_and_answer(hostile_server, frame({"type": "subscribe", "subscription": {"streams": ["DaqSnarl"]}}))
    assert_error(got, MessageType.PROTOCOL_ERROR, contains="'subscribe'")
    wait_for_log(hostile_server, mark, "protocol error from")
    assert_still_serves(hostile_server)


@pytest.mark.parametrize("kind", ["frobnicate", "", None, 7, ["hello"]])
def test_unknown_message_type_before_hello_is_a_protocol_error(hostile_server, kind):
    mark = log_mark(hostile_server)
    got = send_and_answer(hostile_server, frame({"type": kind, "protocol": PROTOCOL_VERSION}))
    assert_error(got, MessageType.PROTOCOL_ERROR, contains="unknown message type")
    wait_for_log(hostile_server, mark, "unknown message type")
    assert_still_serves(hostile_server)


def test_huge_unknown_type_name_is_not_echoed_in_full_to_the_log_or_the_reply(hostile_server):
    mark = log_mark(hostile_server)
    got = send_and_answer(hostile_server, frame({"type": "A" * 60000}))
    assert_error(got, MessageType.PROTOCOL_ERROR, contains="unknown message type 'AAAA")
    assert len(got["message"]) < 1000
    new = wait_for_log(hostile_server, mark, "unknown message type 'AAAA")
    assert len(new) < 2000
    assert_still_serves(hostile_server)


@pytest.mark.parametrize("header", [b"", b"[1, 2]", b'"hello"', b"null", b"{", b'{"type": NaN}'], ids=repr)
def test_header_that_is_not_a_json_object_is_a_protocol_error(hostile_server, header):
    got = send_and_answer(hostile_server, frame(header) if header else PREFIX.pack(0, 0))
    assert_error(got, MessageType.PROTOCOL_ERROR)
    assert_still_serves(hostile_server)


def test_header_of_exactly_64_kib_is_read_and_one_byte_more_is_refused(hostile_server):
    base = len(json.dumps(hello(client="")).encode())
    at_limit = json.dumps(hello(client="x" * (64 * 1024 - base))).encode()
    assert len(at_limit) == 64 * 1024
    with connect(hostile_server) as sock:
        sock.sendall(frame(at_limit))
        got = answer(sock)
    assert got is not None and got["type"] == "welcome", got

    mark = log_mark(hostile_server)
    over = json.dumps(hello(client="x" * (64 * 1024 - base + 1))).encode()
    with connect(hostile_server) as sock:
        sock.sendall(PREFIX.pack(len(over), 0))  # refused on the prefix alone
        assert_error(answer(sock), MessageType.PROTOCOL_ERROR, contains="frame header of 65537 bytes")
    wait_for_log(hostile_server, mark, "frame header of 65537 bytes (limit 65536)")
    assert_still_serves(hostile_server)


@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a":', "}")], ids=["arrays", "objects"])
def test_deeply_nested_json_header_is_a_protocol_error(hostile_server, opener, closer):
    depth = 60 * 1024 // len(opener)
    head = b'{"type":"hello","protocol":1,"client":' + (opener * depth + "0" + closer * depth).encode() + b"}"
    head = head[: 64 * 1024]  # at the limit: the nesting, not the size, is what is refused
    mark = log_mark(hostile_server)
    assert_error(send_and_answer(hostile_server, frame(head)), MessageType.PROTOCOL_ERROR)
    wait_for_log(hostile_server, mark, "protocol error from")
    assert_still_serves(hostile_server)


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80"], ids=repr)
def test_invalid_utf8_in_the_header_is_a_protocol_error(hostile_server, raw):
    head = b'{"type":"hello","protocol":1,"client":"' + raw + b'"}'
    mark = log_mark(hostile_server)
    assert_error(send_and_answer(hostile_server, frame(head)), MessageType.PROTOCOL_ERROR,
                 contains="not valid UTF-8 JSON")
    wait_for_log(hostile_server, mark, "not valid UTF-8 JSON")
    assert_still_serves(hostile_server)


def test_lone_surrogate_escapes_in_a_hello_are_harmless(hostile_server):
    # Valid JSON, invalid Unicode: the text must travel as data, never crash a log line or a compare.
    head = b'{"type":"hello","protocol":1,"client":"\\ud800\\udfff\\ud800","token":"\\udc80"}'
    got = send_and_answer(hostile_server, frame(head))
    assert got is not None and got["type"] == "welcome", got
    assert "Traceback" not in hostile_server.log
    assert_still_serves(hostile_server)


def test_field_of_the_wrong_type_is_a_protocol_error(hostile_server):
    got = send_and_answer(hostile_server, frame(hello(protocol="1")))
    assert_error(got, MessageType.PROTOCOL_ERROR, contains="must be int")
    got = send_and_answer(hostile_server, frame(hello(protocol=True)))
    assert_error(got, MessageType.PROTOCOL_ERROR, contains="must be int")
    got = send_and_answer(hostile_server, frame(hello(extra={"x": 1})))
    assert_error(got, MessageType.PROTOCOL_ERROR, contains="unknown fields")
    assert_still_serves(hostile_server)


# ------------------------------------------------------------------ inside a session


def test_next_before_subscribe_is_bad_subscription_and_the_session_goes_on(hostile_server, session):
    reply = session.call(Next(1.0))
    assert isinstance(reply, Error) and reply.code == MessageType.BAD_SUBSCRIPTION.value
    assert "subscribe" in reply.message
    reply = session.call(Subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest").to_dict()))
    assert isinstance(reply, Ok)
    reply = session.call(Next(ANSWER_SECONDS))
    assert reply.TYPE == "data"
    assert_still_serves(hostile_server)


def test_second_hello_inside_a_session_is_a_protocol_error_and_closes(hostile_server, session):
    mark = log_mark(hostile_server)
    session.sock.sendall(frame(hello()))
    assert_error(answer(session.sock), MessageType.PROTOCOL_ERROR, contains="'hello'")
    assert closed(session.sock)
    wait_for_log(hostile_server, mark, "protocol error")
    assert_still_serves(hostile_server)


@pytest.mark.parametrize("header", [{"type": "frobnicate"}, {"type": "welcome", "protocol": 1, "server": "x", "pid": 1},
                                    {"type": "data"}, {"type": "next", "timeout": "soon"}], ids=str)
def test_unknown_or_misdirected_message_inside_a_session_is_a_protocol_error(hostile_server, session, header):
    mark = log_mark(hostile_server)
    session.sock.sendall(frame(header))
    assert_error(answer(session.sock), MessageType.PROTOCOL_ERROR)
    assert closed(session.sock)
    wait_for_log(hostile_server, mark, "protocol error")
    assert_still_serves(hostile_server)


def test_frame_cut_off_inside_a_session_then_silence_is_dropped_at_the_idle_limit(hostile_server, session):
    mark = log_mark(hostile_server)
    whole = frame({"type": "next", "timeout": 1.0})
    session.sock.sendall(whole[:5])
    assert closed(session.sock)  # --idle-timeout 3
    wait_for_log(hostile_server, mark, "client idle for 3 s: dropped")
    assert_still_serves(hostile_server)


def test_subscription_near_the_header_limit_is_checked_and_refused_by_name(hostile_server, session):
    names = [f"b{i:03d}" + "x" * 250 for i in range(240)]
    sub = {"streams": ["DaqSnarl"], "branches": {"DaqSnarl": names}}
    assert 60 * 1024 < len(json.dumps({"type": "subscribe", "subscription": sub})) <= 64 * 1024
    reply = session.call(Subscribe(sub))
    assert isinstance(reply, Error) and reply.code == MessageType.BAD_SUBSCRIPTION.value
    assert "unknown branch 'b000" in reply.message
    assert isinstance(session.call(Subscribe({"streams": ["DaqSnarl"], "start": "oldest"})), Ok)
    assert session.call(Next(ANSWER_SECONDS)).TYPE == "data"


def test_deeply_nested_subscription_values_are_refused_and_the_session_goes_on(hostile_server, session):
    nested = 0
    for _ in range(200):
        nested = {"a": [nested]}
    for sub in ({"streams": [nested]}, {"streams": ["DaqSnarl"], "selection": {"DaqSnarl": nested}},
                {"streams": ["DaqSnarl"], "keep_up": nested}, {"streams": ["DaqSnarl"], "prescale": 10**30},
                {"streams": ["DaqSnarl"], "max_sync_delay": 10**400}, {"streams": "x" * 300},
                {"streams": ["DaqSnarl"], "evil": 1}, {"streams": []}):
        reply = session.call(Subscribe(sub))
        assert isinstance(reply, Error) and reply.code == MessageType.BAD_SUBSCRIPTION.value, (sub, reply)
    assert isinstance(session.call(Subscribe({"streams": ["DaqSnarl"], "start": "oldest"})), Ok)
    assert session.call(Next(ANSWER_SECONDS)).TYPE == "data"


HOSTILE_SELECTIONS = [
    "__import__('os').system('touch {marker}')",
    "evt > 0 and __import__('os').system('touch {marker}')",
    "().__class__.__bases__[0].__subclasses__()",
    "evt.__class__",
    "open('{marker}', 'w')",
    "eval(\"__import__('os').system('touch {marker}')\")",
    "exec('import os')",
    "(lambda: __import__('os').system('touch {marker}'))()",
    "[x for x in (1,)]",
    "'{marker}' == evt",
    "evt; import os",
    "evt if __import__('os').system('touch {marker}') else 0",
    "getattr(evt, 'real')",
    "sqrt(evt).__class__",
    "where(evt, evt, evt, evt, evt)",
    "evt > 0 # __import__('os').system('touch {marker}')",
    "evt > 0\n__import__('os').system('touch {marker}')",
]


@pytest.mark.parametrize("text", HOSTILE_SELECTIONS, ids=range(len(HOSTILE_SELECTIONS)))
def test_hostile_selection_is_rejected_and_never_run(hostile_server, session, tmp_path, text):
    marker = tmp_path / "pwned"
    text = text.format(marker=marker)
    mark = log_mark(hostile_server)
    reply = session.call(Subscribe({"streams": ["DaqSnarl"], "start": "oldest", "selection": text}))
    if isinstance(reply, Ok):  # a selection accepted at subscribe time must still be a plain cut
        reply = session.call(Next(1.0))
    assert isinstance(reply, Error) and reply.code == MessageType.BAD_SELECTION.value, (text, reply)
    assert not marker.exists()
    assert "Traceback" not in hostile_server.log[mark:]
    # the same text as a per-stream selection, and the session goes on
    reply = session.call(Subscribe({"streams": ["DaqSnarl"], "start": "oldest", "selection": {"DaqSnarl": text}}))
    assert isinstance(reply, Error) and reply.code == MessageType.BAD_SELECTION.value
    assert not marker.exists()
    assert isinstance(session.call(Subscribe({"streams": ["DaqSnarl"], "start": "oldest"})), Ok)
    assert session.call(Next(ANSWER_SECONDS)).TYPE == "data"


def test_selection_with_a_huge_power_answers_in_bounded_time(hostile_server, session):
    start = time.monotonic()
    reply = session.call(Subscribe({"streams": ["DaqSnarl"], "start": "oldest", "selection": "evt < 9**9**9**9"}))
    if isinstance(reply, Ok):
        reply = session.call(Next(1.0))
    assert reply.TYPE in ("data", "error")
    assert time.monotonic() - start < 2 * ANSWER_SECONDS  # a power evaluated in full would never end
    assert_still_serves(hostile_server)


ESCAPING_NAMES = ["../outside/secret.root", "..", ".", "", "/etc/passwd", "/", "link.root",
                  "F00000001_0000.mdaq.root/../../outside/secret.root", "./F00000001_0000.mdaq.root",
                  "..\\outside\\secret.root", "F00000001_0000.mdaq.root\x00", "%2e%2e/outside/secret.root",
                  "~/secret.root", "x" * 5000]


@pytest.mark.parametrize("name", ESCAPING_NAMES, ids=repr)
def test_go_to_file_outside_the_data_directory_is_no_file(hostile_server, session, name):
    assert isinstance(session.call(Subscribe({"streams": ["DaqSnarl"], "start": "oldest"})), Ok)
    reply = session.call(GoToFile(name))
    assert isinstance(reply, Error) and reply.code == MessageType.NO_FILE.value, (name, reply)
    # still at the data file: the next record is from it, not from anything outside
    data = session.call(Next(ANSWER_SECONDS))
    assert data.TYPE == "data"
    assert "secret" not in json.dumps(data.header)


@pytest.mark.parametrize("name", ESCAPING_NAMES, ids=repr)
def test_start_outside_the_data_directory_is_no_file(hostile_server, session, name):
    reply = session.call(Subscribe({"streams": ["DaqSnarl"], "start": name}))
    if name in ("", "x" * 5000) or "\x00" in name:  # not a name at all: the subscription is malformed
        assert isinstance(reply, Error) and reply.code == MessageType.BAD_SUBSCRIPTION.value, reply
    else:
        assert isinstance(reply, Error) and reply.code == MessageType.NO_FILE.value, (name, reply)
    assert isinstance(session.call(Subscribe({"streams": ["DaqSnarl"], "start": "oldest"})), Ok)
    assert session.call(Next(ANSWER_SECONDS)).TYPE == "data"


def test_client_api_refuses_escaping_names_with_no_file(hostile_server):
    with DDSClient(hostile_server.host, hostile_server.port) as dds:
        dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        for name in ("../outside/secret.root", "link.root", "/etc/passwd"):
            with pytest.raises(DDSError) as info:
                dds.go_to_file(name)
            assert info.value.message_type is MessageType.NO_FILE
        assert dds.next(timeout=ANSWER_SECONDS)["DaqSnarl"]["evt"] == 0


# ------------------------------------------------------------------ many at once


def test_two_hundred_half_open_handshakes_do_not_lock_out_a_real_client(data_dir, server_factory):
    write_file(data_dir / "F00000001_0000.mdaq.root", {"DaqSnarl": snarl_data(0, 50)})
    # A long handshake limit: the half-open connections would all still be waiting.
    server = server_factory(data_dir, "--handshake-timeout", "60")
    half = frame(hello())[:6]
    slow = []
    try:
        for i in range(200):
            s = socket.create_connection((server.host, server.port), timeout=ANSWER_SECONDS)
            if i % 2:
                s.sendall(half)  # half of them start a frame, the others say nothing
            slow.append(s)
        start = time.monotonic()
        assert_still_serves(server)
        assert time.monotonic() - start < 2 * ANSWER_SECONDS  # not the 60 s handshake timeout of the slow ones
        # The newest half-open connections are still held open (only the oldest made room).
        newest = slow[-1]
        newest.setblocking(False)
        with pytest.raises(BlockingIOError):
            newest.recv(1)
    finally:
        for s in slow:
            s.close()
    assert "too many handshakes in progress" in server.log
    assert server.proc.poll() is None
