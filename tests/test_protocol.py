"""The wire protocol without sockets: frames, messages, limits, the state machine, record data."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import protocol as P
from dispatcher.columnar import Part, decode_parts, encode_parts
from dispatcher.layouts import OrderLayout, SetLayout, SetsLayout, SyncBatchLayout, from_info
from dispatcher.protocol import (
    PREFIX,
    PROTOCOL_VERSION,
    Connection,
    Data,
    Error,
    GoToFile,
    GoToNextFile,
    Hello,
    InvalidMessage,
    InvalidRequest,
    LocalProtocolError,
    MessageType,
    Next,
    NextBatch,
    Ok,
    RemoteProtocolError,
    Rewind,
    Stop,
    Subscribe,
    Welcome,
)

# --------------------------------------------------------------------------- helpers


def wire(chunks) -> bytes:
    return b"".join(bytes(memoryview(c).cast("B")) for c in chunks)


def raw_frame(header, body: bytes = b"") -> bytes:
    """A frame built by hand, bypassing every check of the sending side."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return PREFIX.pack(len(head), len(body)) + head + body


def deliver(sender: Connection, receiver: Connection, message):
    """Send ``message`` on one side, feed its bytes to the other, return what arrived."""
    receiver.receive_data(wire(sender.send(message)))
    got = receiver.next_message()
    assert receiver.next_message() is None
    return got


def pair():
    """A client and a server connection after a completed handshake (both IDLE)."""
    client, server = Connection("client"), Connection("server")
    deliver(client, server, Hello(PROTOCOL_VERSION, "test"))
    deliver(server, client, Welcome(PROTOCOL_VERSION, "server", 1234))
    assert client.state == server.state == P.IDLE
    return client, server


def server_after_hello():
    server = Connection("server")
    server.receive_data(wire(Connection("client").send(Hello(PROTOCOL_VERSION))))
    assert isinstance(server.next_message(), Hello)
    return server


def client_waiting_for(request=None):
    """A client connection with ``request`` outstanding (state BUSY)."""
    client, server = pair()
    client.send(request or Next(1.0))
    return client


def remote_error_from_server_side(frame: bytes) -> RemoteProtocolError:
    server = Connection("server")
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(frame)
        server.next_message()
    return info.value


# --------------------------------------------------------------------------- frames and messages


REQUESTS = [
    Subscribe({"streams": ["DaqSnarl"], "keep_up": "all", "selection": "nhits > 3 && ok", "prescale": 2}),
    Next(2.5),
    Next(0.0, advance_by=7),
    Next(30.0, advance_by=1, prefetch=256),
    Rewind("F1.root", {"DaqSnarl": 3, "DaqMonitor": 0}),
    NextBatch(1000, 10.0),
    GoToFile("F00012345_0001.mdaq.root"),
    GoToFile("f\u00fcr-\u65e5\u672c.root"),
    GoToNextFile(3.0),
]

REPLIES = [
    Ok(),
    Ok({"file": "F1.root", "nested": {"a": [1, 2.5, None, True]}}),
    Error(MessageType.NO_FILE.value, "no data file 'x.root'"),
    Error(MessageType.TIMEOUT.value),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda m: m.TYPE)
def test_every_request_round_trips_from_client_to_server(request_):
    client, server = pair()
    got = deliver(client, server, request_)
    assert got == request_
    assert type(got) is type(request_)
    assert client.state == server.state == P.BUSY


@pytest.mark.parametrize("reply", REPLIES, ids=lambda m: f"{m.TYPE}")
def test_every_reply_round_trips_from_server_to_client(reply):
    client, server = pair()
    deliver(client, server, Next(1.0))
    got = deliver(server, client, reply)
    assert got == reply
    assert client.state == server.state == P.IDLE


def test_handshake_round_trips_hello_and_welcome_with_all_fields():
    client, server = Connection("client"), Connection("server")
    hello = Hello(PROTOCOL_VERSION, "ddscomm", role="admin", token="s3cret")
    assert deliver(client, server, hello) == hello
    assert client.state == P.HELLO_SENT and server.state == P.BUSY
    welcome = Welcome(PROTOCOL_VERSION, "ddsparentserver/0.1.0 host pid 1", 4321)
    assert deliver(server, client, welcome) == welcome
    assert client.state == server.state == P.IDLE


def test_stop_request_round_trips_on_an_admin_connection():
    client, server = Connection("client"), Connection("server")
    deliver(client, server, Hello(PROTOCOL_VERSION, "ddscomm", role="admin"))
    deliver(server, client, Welcome(PROTOCOL_VERSION, "s", 1))
    assert deliver(client, server, Stop()) == Stop()
    assert deliver(server, client, Ok({"server": "s"})) == Ok({"server": "s"})


def test_data_message_round_trips_header_and_body():
    client, server = pair()
    deliver(client, server, Next(1.0))
    body = bytes(range(256)) * 3
    got = deliver(server, client, Data(header={"parts": [], "sets": [], "x": 1}, body=[body[:100], body[100:]]))
    assert isinstance(got, Data)
    assert got.header["x"] == 1 and got.header["parts"] == [] and got.header["type"] == "data"
    assert bytes(got.body) == body


def test_frame_is_prefix_then_json_header_then_body():
    frame = wire(Connection("client").send(Hello(PROTOCOL_VERSION, "c")))
    hlen, blen = struct.unpack("!II", frame[:8])
    assert blen == 0 and len(frame) == 8 + hlen
    assert json.loads(frame[8:]) == {"type": "hello", "protocol": PROTOCOL_VERSION, "client": "c", "role": "client",
                                     "token": ""}


@pytest.mark.parametrize("mtype", list(MessageType))
def test_every_message_type_has_a_readable_line_and_survives_an_error_reply(mtype):
    text = mtype.as_string()
    assert text.startswith(mtype.value + ":") and len(text) > len(mtype.value) + 5
    client, server = pair()
    deliver(client, server, Next(1.0))
    got = deliver(server, client, Error(mtype.value, "why"))
    assert got.message_type is mtype and got.message == "why"


def test_an_unknown_error_code_reads_as_server_error():
    assert Error("SOMETHING_NEW").message_type is MessageType.SERVER_ERROR


def test_frame_split_byte_by_byte_is_reassembled():
    client, server = pair()
    deliver(client, server, Next(1.0))
    frame = wire(server.send(Data(header={"parts": []}, body=[b"abcdefgh" * 5])))
    for i, byte in enumerate(frame):
        assert client.next_message() is None, f"a message appeared after {i} of {len(frame)} bytes"
        client.receive_data(bytes([byte]))
    got = client.next_message()
    assert isinstance(got, Data) and bytes(got.body) == b"abcdefgh" * 5
    assert client.next_message() is None


def test_bytes_wanted_counts_down_to_the_end_of_the_frame():
    client, server = pair()
    frame = wire(client.send(Next(1.0)))
    assert server.bytes_wanted == 8
    server.receive_data(frame[:3])
    assert server.bytes_wanted == 5
    server.receive_data(frame[3:10])
    assert server.bytes_wanted == len(frame) - 10
    server.receive_data(frame[10:])
    assert server.next_message() == Next(1.0)


def test_two_frames_in_one_chunk_give_two_messages():
    client = Connection("client")
    client.send(Hello(PROTOCOL_VERSION))
    # a welcome followed at once by the shutdown notice: both arrive, in order
    chunk = wire(P.encode(Welcome(PROTOCOL_VERSION, "s", 1))) + wire(P.encode(Error(MessageType.SHUTDOWN.value, "bye")))
    client.receive_data(chunk)
    first, second = client.next_message(), client.next_message()
    assert isinstance(first, Welcome) and isinstance(second, Error)
    assert second.message_type is MessageType.SHUTDOWN
    assert client.next_message() is None
    assert client.state == P.CLOSED


def test_two_requests_in_one_chunk_are_read_one_per_reply():
    client, server = pair()
    server.receive_data(wire(P.encode(Next(1.0))) + wire(P.encode(GoToFile("a.root"))))
    assert server.next_message() == Next(1.0)
    server.send(Error(MessageType.TIMEOUT.value))
    assert server.next_message() == GoToFile("a.root")
    assert server.state == P.BUSY and server.next_message() is None


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
       timeout=st.floats(min_value=0, max_value=P.MAX_TIMEOUT, allow_nan=False),
       name=st.text(max_size=40))
def test_any_chunking_of_a_request_stream_gives_the_same_messages(cuts, timeout, name):
    client, server = pair()
    msgs = [GoToFile(name), Next(timeout, 3)]
    data = wire(P.encode(msgs[0]))
    second = wire(P.encode(msgs[1]))
    got = []
    stream = data + second
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    for a, b in zip(points[:-1], points[1:]):
        server.receive_data(stream[a:b])
        m = server.next_message()
        if m is not None:
            got.append(m)
            server.send(Ok())
    while (m := server.next_message()) is not None:
        got.append(m)
    assert got == msgs


# --------------------------------------------------------------------------- limits


def test_oversized_header_prefix_is_rejected_before_any_header_byte_arrives():
    server = Connection("server")
    with pytest.raises(RemoteProtocolError, match="header"):
        server.receive_data(PREFIX.pack(P.CLIENT_MAX_HEADER + 1, 0))


def test_any_body_from_a_client_is_rejected_at_the_prefix():
    server = Connection("server")
    with pytest.raises(RemoteProtocolError, match="body"):
        server.receive_data(PREFIX.pack(20, 1))


def test_maximal_length_prefix_is_rejected_on_both_sides():
    for role in ("server", "client"):
        with pytest.raises(RemoteProtocolError):
            Connection(role).receive_data(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    with pytest.raises(RemoteProtocolError, match="body"):
        client_waiting_for().receive_data(PREFIX.pack(10, 2**32 - 1))


def test_oversized_body_prefix_from_the_server_is_rejected_before_buffering():
    client = client_waiting_for()
    with pytest.raises(RemoteProtocolError, match="body"):
        client.receive_data(PREFIX.pack(10, P.SERVER_MAX_BODY + 1))


def test_empty_header_is_rejected():
    assert "header" in str(remote_error_from_server_side(PREFIX.pack(0, 0)))


def test_header_at_the_limit_is_accepted():
    pad = P.CLIENT_MAX_HEADER - len(json.dumps({"type": "hello", "protocol": 1, "client": ""}).encode())
    frame = raw_frame({"type": "hello", "protocol": 1, "client": "x" * pad})
    assert len(frame) == 8 + P.CLIENT_MAX_HEADER
    server = Connection("server")
    server.receive_data(frame)
    assert server.next_message().client == "x" * pad


def test_a_partial_frame_buffers_no_more_than_the_frame_limit():
    server = Connection("server")
    server.receive_data(PREFIX.pack(P.CLIENT_MAX_HEADER, 0) + b"{" * 1000)
    assert server.bytes_wanted == P.CLIENT_MAX_HEADER - 1000
    assert server.next_message() is None


# --------------------------------------------------------------------------- malformed headers


@pytest.mark.parametrize(
    "header, match",
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"type": "hello", "protocol": 1', "JSON"),
        (b"[1, 2, 3]", "object"),
        (b'"hello"', "object"),
        (b"null", "object"),
        (b"42", "object"),
        (b'{"type": "next", "timeout": NaN}', "JSON"),
        (b'{"type": "next", "timeout": Infinity}', "JSON"),
        (b'{"type": "next", "timeout": -Infinity}', "JSON"),
        (b"[" * 30000 + b"]" * 30000, "JSON"),
        (b'{"type": "explode"}', "unknown message type"),
        (b'{"type": 5}', "unknown message type"),
        (b'{"protocol": 1}', "unknown message type"),
        (b'{"type": "hello"}', "lacks field 'protocol'"),
        (b'{"type": "hello", "protocol": 1, "admin": true}', "unknown fields"),
        (b'{"type": "hello", "protocol": true}', "must be int"),
        (b'{"type": "hello", "protocol": 1.0}', "must be int"),
        (b'{"type": "hello", "protocol": "1"}', "must be int"),
        (b'{"type": "hello", "protocol": 1, "token": 7}', "must be str"),
        (b'{"type": "hello", "protocol": 1, "client": null}', "must be str"),
    ],
    ids=lambda v: v[:30].decode("latin-1") if isinstance(v, bytes) else v,
)
def test_malformed_hello_is_a_remote_protocol_error(header, match):
    err = remote_error_from_server_side(raw_frame(header))
    assert match in str(err)


@pytest.mark.parametrize(
    "header, match",
    [
        ({"type": "next"}, "lacks field 'timeout'"),
        ({"type": "next", "timeout": 1.0, "advance_by": True}, "must be int"),
        ({"type": "next", "timeout": 1.0, "advance_by": 1.5}, "must be int"),
        ({"type": "next", "timeout": "1"}, "must be float"),
        ({"type": "next", "timeout": False}, "must be float"),
        ({"type": "next", "timeout": 1.0, "extra": 1}, "unknown fields"),
        ({"type": "next_batch", "max_records": [1], "timeout": 1.0}, "must be int"),
        ({"type": "go_to_file", "name": ["a.root"]}, "must be str"),
        ({"type": "go_to_file"}, "lacks field 'name'"),
        ({"type": "subscribe", "subscription": []}, "must be dict"),
        ({"type": "go_to_next_file", "timeout": None}, "must be float"),
        ({"type": "stop", "now": True}, "unknown fields"),
        ({"type": "next", "timeout": 1.0, "prefetch": "all"}, "must be int"),
        ({"type": "rewind", "file": "F1.root", "consumed": [1]}, "must be dict"),
        ({"type": "rewind", "consumed": {}}, "lacks field 'file'"),
    ],
    ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else v,
)
def test_malformed_request_is_a_remote_protocol_error(header, match):
    server = server_after_hello()
    server.send(Welcome(PROTOCOL_VERSION, "s", 1))
    with pytest.raises(RemoteProtocolError, match=match):
        server.receive_data(raw_frame(header))
        server.next_message()


def test_deeply_nested_json_from_the_server_is_a_remote_protocol_error():
    client = client_waiting_for()
    with pytest.raises(RemoteProtocolError):
        client.receive_data(raw_frame(b"[" * 100000 + b"]" * 100000))
        client.next_message()


def test_deeply_nested_object_inside_a_valid_header_is_a_remote_protocol_error():
    client = client_waiting_for()
    nested = b'{"type": "ok", "info": ' + b'{"a":' * 100000 + b"1" + b"}" * 100000 + b"}"
    with pytest.raises(RemoteProtocolError):
        client.receive_data(raw_frame(nested))
        client.next_message()


@pytest.mark.parametrize("header", [{"type": "ok"}, {"type": "error", "code": "TIMEOUT"},
                                    {"type": "welcome", "protocol": 1, "server": "s", "pid": 1}])
def test_body_on_a_control_message_is_a_remote_protocol_error(header):
    client = client_waiting_for() if header["type"] != "welcome" else Connection("client")
    if header["type"] == "welcome":
        client.send(Hello(PROTOCOL_VERSION))
    with pytest.raises(RemoteProtocolError, match="body"):
        client.receive_data(raw_frame(header, b"xyz"))
        client.next_message()


def test_sending_nan_is_refused_locally():
    client, _ = pair()
    with pytest.raises(ValueError):
        client.send(Next(float("nan")))


# --------------------------------------------------------------------------- state machine


def test_request_before_hello_is_a_remote_protocol_error():
    server = Connection("server")
    with pytest.raises(RemoteProtocolError, match="'next'.*AWAIT_HELLO"):
        server.receive_data(wire(P.encode(Next(1.0))))
        server.next_message()


def test_second_hello_is_a_remote_protocol_error():
    client, server = pair()
    with pytest.raises(RemoteProtocolError, match="'hello'.*IDLE"):
        server.receive_data(wire(P.encode(Hello(PROTOCOL_VERSION))))
        server.next_message()


def test_request_while_one_is_outstanding_is_a_remote_protocol_error():
    client, server = pair()
    deliver(client, server, Next(5.0))
    with pytest.raises(RemoteProtocolError, match="'go_to_file'.*BUSY"):
        server.receive_data(wire(P.encode(GoToFile("a.root"))))
        server.next_message()


@pytest.mark.parametrize("message", [Ok(), Welcome(1, "s", 1), Error("TIMEOUT"), Data(header={"parts": []})],
                         ids=lambda m: m.TYPE)
def test_server_side_refuses_reply_messages_from_a_client(message):
    _, server = pair()
    with pytest.raises(RemoteProtocolError, match=f"'{message.TYPE}'.*IDLE"):
        server.receive_data(wire(P.encode(message)))
        server.next_message()


def test_client_receiving_data_while_idle_is_a_remote_protocol_error():
    client, _ = pair()
    with pytest.raises(RemoteProtocolError, match="'data'.*IDLE"):
        client.receive_data(wire(P.encode(Data(header={"parts": []}, body=b""))))
        client.next_message()


def test_client_receiving_a_request_is_a_remote_protocol_error():
    client = client_waiting_for()
    with pytest.raises(RemoteProtocolError, match="'next'"):
        client.receive_data(wire(P.encode(Next(1.0))))
        client.next_message()


def test_client_receiving_data_instead_of_welcome_is_a_remote_protocol_error():
    client = Connection("client")
    client.send(Hello(PROTOCOL_VERSION))
    with pytest.raises(RemoteProtocolError, match="HELLO_SENT"):
        client.receive_data(wire(P.encode(Ok())))
        client.next_message()


@pytest.mark.parametrize("code", ["SERVER_BUSY", "FORBIDDEN", "PROTOCOL_ERROR"])
def test_refusal_instead_of_welcome_closes_the_client_side(code):
    client, server = Connection("client"), Connection("server")
    client.send(Hello(PROTOCOL_VERSION))
    # the parent refuses before reading anything: its connection is still awaiting the hello
    got = deliver(server, client, Error(code, "no"))
    assert got.message_type is MessageType(code)
    assert client.state == server.state == P.CLOSED
    with pytest.raises(LocalProtocolError):
        client.send(Next(1.0))
    with pytest.raises(RemoteProtocolError, match="closed"):
        client.receive_data(b"\x00")


def test_shutdown_error_is_accepted_at_any_time_and_closes():
    for state in ("idle", "busy"):
        client, server = pair()
        if state == "busy":
            deliver(client, server, Next(60.0))
        got = deliver(Connection("server"), client, Error(MessageType.SHUTDOWN.value, "bye"))
        assert got.message_type is MessageType.SHUTDOWN
        assert client.state == P.CLOSED


def test_sending_a_request_before_hello_is_a_local_protocol_error():
    with pytest.raises(LocalProtocolError, match="'next'.*AWAIT_HELLO"):
        Connection("client").send(Next(1.0))


def test_sending_a_request_before_welcome_is_a_local_protocol_error():
    client = Connection("client")
    client.send(Hello(PROTOCOL_VERSION))
    with pytest.raises(LocalProtocolError, match="HELLO_SENT"):
        client.send(Subscribe({}))


def test_sending_a_second_request_while_one_is_outstanding_is_a_local_protocol_error():
    client = client_waiting_for()
    with pytest.raises(LocalProtocolError, match="'next_batch'.*BUSY"):
        client.send(NextBatch(10, 1.0))


def test_sending_a_second_hello_is_a_local_protocol_error():
    client, _ = pair()
    with pytest.raises(LocalProtocolError):
        client.send(Hello(PROTOCOL_VERSION))


def test_server_sending_a_reply_with_no_request_is_a_local_protocol_error():
    _, server = pair()
    with pytest.raises(LocalProtocolError, match="'data'.*IDLE"):
        server.send(Data(header={"parts": []}))
    with pytest.raises(LocalProtocolError, match="'ok'.*IDLE"):
        server.send(Ok())


def test_server_sending_a_request_is_a_local_protocol_error():
    server = server_after_hello()
    with pytest.raises(LocalProtocolError):
        server.send(Next(1.0))


def test_server_sending_two_replies_to_one_request_is_a_local_protocol_error():
    client, server = pair()
    deliver(client, server, Next(1.0))
    server.send(Ok())
    with pytest.raises(LocalProtocolError):
        server.send(Ok())


def test_protocol_error_reply_closes_the_server_side():
    client, server = pair()
    server.send(Error(MessageType.PROTOCOL_ERROR.value, "bad"))
    assert server.state == P.CLOSED
    with pytest.raises(LocalProtocolError):
        server.send(Ok())


def test_unknown_role_is_refused():
    with pytest.raises(ValueError, match="role"):
        Connection("peer")


# --------------------------------------------------------------------------- record data


def _round_trip(parts, info=None):
    client, server = pair()
    deliver(client, server, Next(1.0))
    got = deliver(server, client, encode_parts(parts, from_info(info, len(parts))))
    return got, decode_parts(got)


def test_flat_records_round_trip_through_column_buffers():
    rng = np.random.default_rng(1)
    arrays = ak.Array({
        "evt": np.arange(100, 200, dtype=np.int64),
        "kind": rng.integers(0, 4, 100).astype(np.int32),
        "energy": rng.exponential(10.0, 100),
        "small": rng.integers(-100, 100, 100).astype(np.int8),
        "ok": rng.random(100) < 0.5,
    })
    entries = np.arange(5, 105, dtype=np.int64)
    msg, (part,) = _round_trip([Part("DaqSnarl", "F1.root", entries, arrays)],
                               info={"sets": [{"file": "F1.root", "members": [[0, 0]], "missing": []}]})
    assert part.stream == "DaqSnarl" and part.file == "F1.root"
    assert part.entries.dtype == np.int64 and part.entries.tolist() == entries.tolist()
    assert part.arrays.fields == arrays.fields
    assert ak.to_list(part.arrays) == ak.to_list(arrays)
    for name in arrays.fields:
        assert ak.to_numpy(part.arrays[name]).dtype == ak.to_numpy(arrays[name]).dtype
    assert msg.header["info"]["sets"] == [{"file": "F1.root", "members": [[0, 0]], "missing": []}]


def test_jagged_records_and_several_parts_round_trip():
    a = ak.Array({"n": np.array([2, 0, 3], dtype=np.int32),
                  "hits": ak.Array([[1.5, 2.5], [], [3.0, 4.0, 5.0]]),
                  "strips": ak.values_astype(ak.Array([[1, 2], [], [3, 4, 5]]), np.int16)})
    b = ak.Array({"t": np.array([0.5, 0.25])})
    sliced = a[1:]  # not packed: the encoder must pack it
    msg, parts = _round_trip([Part("DaqSnarl", "F2.root", np.array([7, 8]), sliced),
                              Part("DaqMonitor", "F2.root", np.array([0, 1]), b)],
                             info={"batch": {"length": 2, "positions": {"DaqSnarl": [0, 1], "DaqMonitor": [0, 1]}}})
    assert [p.stream for p in parts] == ["DaqSnarl", "DaqMonitor"]
    assert ak.to_list(parts[0].arrays) == ak.to_list(sliced)
    assert str(parts[0].arrays.type.content) == str(sliced.type.content)
    assert ak.to_list(parts[1].arrays) == [{"t": 0.5}, {"t": 0.25}]
    assert parts[0].entries.tolist() == [7, 8]
    assert msg.header["info"]["batch"]["length"] == 2


def test_empty_part_round_trips():
    arrays = ak.Array({"x": np.zeros(0, dtype=np.float32)})
    _, (part,) = _round_trip([Part("S", "F.root", np.zeros(0, dtype=np.int64), arrays)])
    assert len(part.arrays) == 0 and len(part.entries) == 0 and part.arrays.fields == ["x"]


def _encoded_jagged():
    arrays = ak.Array({"x": np.arange(5, dtype=np.int32), "hits": [[1.0], [], [2.0, 3.0], [4.0], []]})
    msg = encode_parts([Part("S", "f.root", np.arange(5), arrays)])
    return msg.header, b"".join(bytes(c) for c in msg.body)


@pytest.mark.parametrize("cut", [1, 3, 8, 20, 40])
def test_truncated_record_body_is_a_remote_protocol_error(cut):
    header, body = _encoded_jagged()
    with pytest.raises(RemoteProtocolError, match="record data"):
        decode_parts(Data(header=header, body=memoryview(body[:-cut])))


def test_record_body_with_extra_bytes_is_a_remote_protocol_error():
    header, body = _encoded_jagged()
    with pytest.raises(RemoteProtocolError, match="unexplained"):
        decode_parts(Data(header=header, body=memoryview(body + b"\x00")))


@pytest.mark.parametrize("breakage", ["no parts", "parts not a list", "unknown form class", "primitive object",
                                      "huge length", "sizes as strings", "wrong keys", "offsets past content"])
def test_malformed_record_description_is_a_remote_protocol_error(breakage):
    header, body = _encoded_jagged()
    d = header["parts"][0]
    if breakage == "no parts":
        header = {}
    elif breakage == "parts not a list":
        header = {"parts": 5}
    elif breakage == "unknown form class":
        d["form"] = {"class": "PickleArray"}
    elif breakage == "primitive object":
        d["form"]["contents"][0]["primitive"] = "object"
    elif breakage == "huge length":
        d["length"] = 10**9
    elif breakage == "sizes as strings":
        d["sizes"] = ["8"] * len(d["sizes"])
    elif breakage == "wrong keys":
        d["keys"] = ["nonsense"] * len(d["keys"])
    elif breakage == "offsets past content":
        # the offsets buffer follows the entries and the first column
        start = 8 * 5 + d["sizes"][0]
        offsets = np.frombuffer(body[start : start + d["sizes"][1]], dtype=np.int64).copy()
        offsets[-1] = 10**9
        body = body[:start] + offsets.tobytes() + body[start + d["sizes"][1]:]
    with pytest.raises(RemoteProtocolError, match="record data"):
        decode_parts(Data(header=header, body=memoryview(body)))


# --------------------------------------------------------------------------- range checks in the constructors


OUT_OF_RANGE = [
    (lambda: Next(1.0, advance_by=0), "advance_by"),
    (lambda: Next(1.0, advance_by=P.MAX_ADVANCE + 1), "advance_by"),
    (lambda: Next(1.0, prefetch=0), "prefetch"),
    (lambda: Next(1.0, prefetch=P.MAX_BATCH + 1), "prefetch"),
    (lambda: Next(-0.5), "timeout"),
    (lambda: Next(math.inf), "timeout"),
    (lambda: Next(math.nan), "timeout"),
    (lambda: Next(P.MAX_TIMEOUT + 1), "timeout"),
    (lambda: Next(10**400), "timeout"),
    (lambda: NextBatch(0, 1.0), "max_records"),
    (lambda: NextBatch(P.MAX_BATCH + 1, 1.0), "max_records"),
    (lambda: NextBatch(10, -1.0), "timeout"),
    (lambda: GoToNextFile(math.inf), "timeout"),
]


@pytest.mark.parametrize("build, name", OUT_OF_RANGE, ids=[n for _, n in OUT_OF_RANGE])
def test_a_request_out_of_range_cannot_be_built(build, name):
    with pytest.raises(InvalidMessage, match=name) as info:
        build()
    assert isinstance(info.value, ValueError)


def test_requests_at_the_edges_of_their_ranges_are_built():
    assert Next(0).timeout == 0.0 and isinstance(Next(0).timeout, float)
    assert Next(P.MAX_TIMEOUT, advance_by=P.MAX_ADVANCE, prefetch=P.MAX_BATCH).prefetch == P.MAX_BATCH
    assert NextBatch(1, P.MAX_TIMEOUT).max_records == 1


@pytest.mark.parametrize("header, name", [
    ({"type": "next", "timeout": 1.0, "advance_by": 0}, "advance_by"),
    ({"type": "next", "timeout": -1}, "timeout"),
    ({"type": "next", "timeout": 10**400}, "timeout"),
    ({"type": "next", "timeout": 1.0, "prefetch": 10**7}, "prefetch"),
    ({"type": "next_batch", "max_records": 0, "timeout": 1.0}, "max_records"),
    ({"type": "go_to_next_file", "timeout": 1e9}, "timeout"),
], ids=lambda v: json.dumps(v)[:40] if isinstance(v, dict) else v)
def test_a_request_out_of_range_reaches_the_server_as_an_invalid_request_to_answer(header, name):
    _, server = pair()
    server.receive_data(raw_frame(header))
    got = server.next_message()
    assert isinstance(got, InvalidRequest) and got.request == header["type"] and name in got.reason
    assert server.state == P.BUSY
    server.send(Error(MessageType.BAD_SUBSCRIPTION, got.reason))
    assert server.state == P.IDLE


def test_a_request_out_of_range_before_hello_is_still_out_of_order():
    with pytest.raises(RemoteProtocolError, match="'next'.*AWAIT_HELLO"):
        server = Connection("server")
        server.receive_data(raw_frame({"type": "next", "timeout": -1}))
        server.next_message()


def test_an_invalid_request_is_never_sent():
    client, _ = pair()
    with pytest.raises(LocalProtocolError, match="never sent"):
        client.send(InvalidRequest("next", "advance_by"))
    assert client.state == P.IDLE


# --------------------------------------------------------------------------- states and error codes


def test_states_are_an_enum_and_the_table_names_only_known_messages():
    assert isinstance(Connection("client").state, P.State)
    known = {cls.TYPE for cls in (Hello, *P.REQUESTS, *P.REPLIES) if cls is not Error}
    known |= {f"error {code.value}" for code in MessageType}
    for role, direction, state, event in P.TRANSITIONS:
        assert role in ("client", "server") and direction in (P.SEND, P.RECEIVE)
        assert isinstance(state, P.State) and event in known


def test_error_code_is_a_message_type_and_travels_by_name():
    err = Error("NO_FILE", "x")
    assert err.code is MessageType.NO_FILE and err.message_type is MessageType.NO_FILE
    assert Error(MessageType.TIMEOUT) == Error("TIMEOUT")
    frame = wire(P.encode(Error(MessageType.NO_FILE, "x")))
    assert json.loads(frame[PREFIX.size:])["code"] == "NO_FILE"


def test_an_unknown_error_code_from_the_server_reads_as_server_error():
    client = client_waiting_for()
    client.receive_data(raw_frame({"type": "error", "code": "NEWER_THAN_US", "message": "m"}))
    got = client.next_message()
    assert got.code is MessageType.SERVER_ERROR and got.message == "m"


# --------------------------------------------------------------------------- typed layouts on the wire


LAYOUTS = [
    OrderLayout((0, 1, 0)),
    SetsLayout((SetLayout("F.root", ((0, 0), (1, 0)), ("DaqMonitor",)), SetLayout("F.root", ((0, 1),)))),
    SyncBatchLayout(2, {"S": [0, 1], "T": [1]}),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda v: type(v).__name__)
def test_a_layout_round_trips_through_a_data_message(layout):
    s = Part("S", "F.root", np.arange(2), ak.Array({"x": [1, 2]}))
    t = Part("T", "F.root", np.arange(1), ak.Array({"y": [3.0]}))
    msg, parts = _round_trip([s, t], layout.to_info())
    assert from_info(msg.header["info"], len(parts)) == layout


def test_a_data_message_without_a_layout_has_no_info():
    msg = encode_parts([Part("S", "F.root", np.arange(1), ak.Array({"x": [1]}))])
    assert "info" not in msg.header and from_info(msg.header.get("info"), 1) is None


# --------------------------------------------------------------------------- the client's share of the server


def test_the_client_sdk_imports_only_the_wire_layer_and_nothing_heavy():
    code = ("import sys, clients, clients.iterate; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('dispatcher', 'uproot', 'numexpr'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split())
    wire_layer = {"dispatcher", *(f"dispatcher.{m}" for m in
                                  ("protocol", "layouts", "columnar", "subscription", "transport", "tlsstream",
                                   "suggest", "compression"))}
    assert loaded <= wire_layer, loaded - wire_layer


# --------------------------------------------------------------------------- the child's dispatch


def test_the_child_answers_every_request_type_and_refuses_the_rest():
    from dispatcher import child

    assert set(child.HANDLERS) == {*P.REQUESTS, InvalidRequest}
    # these answers need no session
    bad = child.handle(None, InvalidRequest("next", "advance_by must be between 1 and 1000000000, not 0"))
    assert bad == Error(MessageType.BAD_SUBSCRIPTION, "advance_by must be between 1 and 1000000000, not 0")
    assert child.handle(None, Stop()).code is MessageType.FORBIDDEN
    assert child.handle(None, Ok()).code is MessageType.PROTOCOL_ERROR
