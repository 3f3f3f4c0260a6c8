"""Property fuzzing of everything that parses what a peer sent.

- the sans-IO decoder (``Connection("server")`` and ``Connection("client")``)
  fed arbitrary bytes, and mutated real frames, split at arbitrary points;
- ``subscription.from_dict`` fed arbitrary JSON-like values;
- ``columnar.decode_parts`` (what a client does with a hostile server's data).

Only the documented error may escape (``ProtocolError`` subclasses,
``SubscriptionError``) and the decoder never holds more than one frame's limit
plus the chunk just fed. Brief by default (CI); ``DDS_FUZZ_EXAMPLES=20000``
runs it longer by hand. tests/fuzz_atheris.py drives the same targets with
coverage guidance.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher import protocol
from dispatcher.columnar import decode_parts
from dispatcher.protocol import (
    CLIENT_MAX_BODY,
    CLIENT_MAX_HEADER,
    PREFIX,
    SERVER_MAX_BODY,
    SERVER_MAX_HEADER,
    Connection,
    Data,
    ProtocolError,
)
from dispatcher.subscription import Subscription, SubscriptionError, from_dict

EXAMPLES = int(os.environ.get("DDS_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.data_too_large])

LIMITS = {"server": (CLIENT_MAX_HEADER, CLIENT_MAX_BODY), "client": (SERVER_MAX_HEADER, SERVER_MAX_BODY)}
TYPES = ["hello", "welcome", "subscribe", "next", "next_batch", "go_to_file", "go_to_next_file", "stop",
         "ok", "error", "data", "rewind"]
FIELDS = ["protocol", "client", "role", "token", "server", "pid", "subscription", "timeout", "advance_by",
          "prefetch", "max_records", "name", "info", "code", "message", "parts", "file", "consumed"]

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats() | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


MESSAGES = [c for c in vars(protocol).values()
            if isinstance(c, type) and issubclass(c, protocol.Message) and c.TYPE]
EXPECTED = {"server": list(protocol.REQUESTS), "client": list(protocol.REPLIES)}
BY_TYPE = {
    "int": st.integers(-3, 10) | st.integers(),
    "float": st.floats(-1, 100) | st.floats() | st.integers(-3, 10),
    "str": st.sampled_from(["", "DaqSnarl", "F00000001_0000.mdaq.root", "OK", "SHUTDOWN", "admin", "../x"])
    | st.text(max_size=12),
    "dict": st.dictionaries(st.text(max_size=8), json_values, max_size=4),
}


@st.composite
def headers(draw, role: str) -> bytes:
    """A JSON header: mostly a message with well-typed fields, sometimes ill-typed, sometimes anything."""
    roll = draw(st.integers(0, 9))
    if roll == 0:
        return json.dumps(draw(json_values)).encode()
    # mostly what this side expects to receive, so the state machine gets further
    cls = draw(st.sampled_from(MESSAGES if roll < 4 else EXPECTED[role]))
    header = {"type": cls.TYPE if roll > 1 else draw(st.text(max_size=8))}
    for f in dataclasses.fields(cls):
        optional = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        if optional and draw(st.booleans()):
            continue
        good = BY_TYPE.get(f.type, json_values)
        header[f.name] = draw(good if draw(st.integers(0, 4)) else json_values)
    if draw(st.integers(0, 9)) == 0:
        header[draw(st.sampled_from(FIELDS) | st.text(max_size=6))] = draw(json_values)
    return json.dumps(header).encode()


@st.composite
def frames(draw, role: str) -> bytes:
    max_header, max_body = LIMITS[role]
    head = draw(headers(role))
    body = draw(st.binary(max_size=64)) if draw(st.integers(0, 3)) == 0 else b""
    hlen, blen = len(head), len(body)
    if draw(st.integers(0, 4)) == 0:  # a lying prefix
        hlen = draw(st.sampled_from([0, 1, max_header, max_header + 1, 2**32 - 1]) | st.integers(0, 2**32 - 1))
        blen = draw(st.sampled_from([0, 1, max_body, max_body + 1, 2**32 - 1]) | st.integers(0, 2**32 - 1))
    return PREFIX.pack(hlen, blen) + head + body


@st.composite
def streams(draw, role: str) -> bytes:
    """A byte stream: frames, junk, and frames with a few bytes flipped."""
    pieces = draw(st.lists(frames(role) | st.binary(max_size=40), min_size=1, max_size=4))
    if draw(st.booleans()):  # open the conversation properly, so later frames meet a later state
        first = _hello() if role == "server" else protocol.Welcome(protocol.PROTOCOL_VERSION, "fuzz", 1)
        pieces.insert(0, b"".join(protocol.encode(first)))
    data = bytearray(b"".join(pieces))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 3]))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def feed_in_chunks(role: str, data: bytes, cuts: list[int]) -> None:
    """Feed ``data`` split at ``cuts``, reading messages as a peer would; only ProtocolError may escape."""
    max_header, max_body = LIMITS[role]
    conn = Connection(role)
    if role == "client":  # a client has sent its hello: the server's welcome is expected
        conn.send(_hello())
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    try:
        for a, b in zip(edges[:-1], edges[1:]):
            conn.receive_data(data[a:b])
            # bounded: at most one frame's limit plus the chunk just fed
            assert len(conn._decoder._buf) <= PREFIX.size + max_header + max_body + (b - a)
            assert 1 <= conn.bytes_wanted <= PREFIX.size + max_header + max_body
            for _ in range(len(data) + 1):
                msg = conn.next_message()
                if msg is None:
                    break
                if isinstance(msg, Data):
                    try:
                        decode_parts(msg)
                    except ProtocolError:
                        pass
                _answer(conn, msg)
            # nothing complete is left unread
            assert len(conn._decoder._buf) < PREFIX.size + max_header + max_body + 1
    except ProtocolError:
        pass


def _hello():
    from dispatcher.protocol import PROTOCOL_VERSION, Hello

    return Hello(PROTOCOL_VERSION, "fuzz")


def _answer(conn: Connection, msg) -> None:
    """Keep the conversation going the way the real peer would, so later frames are parsed too."""
    from dispatcher.protocol import Error, Next, Ok

    if conn.role == "server":
        conn.send(Ok({}) if msg.TYPE != "stop" else Error("FORBIDDEN", "no"))
    elif conn.state == "IDLE":
        conn.send(Next(1.0))


@FUZZ
@given(data=st.binary(max_size=512), cuts=st.lists(st.integers(0, 10**6), max_size=8),
       role=st.sampled_from(["server", "client"]))
def test_decoder_fed_arbitrary_bytes_raises_only_protocol_errors(data, cuts, role):
    feed_in_chunks(role, data, cuts)


@FUZZ
@given(data=st.data(), cuts=st.lists(st.integers(0, 10**6), max_size=8), role=st.sampled_from(["server", "client"]))
def test_decoder_fed_mutated_frames_raises_only_protocol_errors(data, cuts, role):
    feed_in_chunks(role, data.draw(streams(role)), cuts)


@FUZZ
@given(hlen=st.integers(0, 2**32 - 1), blen=st.integers(0, 2**32 - 1), role=st.sampled_from(["server", "client"]),
       extra=st.binary(max_size=16))
def test_prefix_over_a_limit_is_refused_before_the_frame_is_buffered(hlen, blen, role, extra):
    max_header, max_body = LIMITS[role]
    conn = Connection(role)
    over = hlen == 0 or hlen > max_header or blen > max_body
    try:
        conn.receive_data(PREFIX.pack(hlen, blen) + extra)
    except ProtocolError as exc:
        assert over, exc
        return
    assert not over
    assert conn.bytes_wanted == max(1, hlen + blen - len(extra))


subscription_fields = st.sampled_from(["streams", "keep_up", "selection", "branches", "start", "prescale", "sync",
                                       "max_sync_delay"])
plausible = {
    "streams": st.lists(st.sampled_from(["DaqSnarl", "DaqMonitor", "", "x" * 300]) | json_values, max_size=4)
    | json_values,
    "keep_up": st.sampled_from(["all", "file", "record", "All", "FileKeepUp", "RecordKeepUp", "ALL ", "nope"])
    | json_values,
    "prescale": st.integers(-5, 2**33) | json_values,
    "max_sync_delay": st.floats() | st.integers(-(2**1100), 2**1100) | json_values,
}


@st.composite
def subscription_dicts(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    d = {}
    for name in draw(st.lists(subscription_fields, max_size=8, unique=True)):
        d[name] = draw(plausible.get(name, json_values))
    if draw(st.integers(0, 9)) == 0:
        d[draw(st.text(max_size=6))] = draw(json_values)
    return d


@FUZZ
@given(value=subscription_dicts())
def test_subscription_from_arbitrary_json_raises_only_subscription_errors(value):
    try:
        sub = from_dict(value)
    except SubscriptionError:
        return
    assert isinstance(sub, Subscription)
    # what was accepted is consistent and survives the trip back over the wire
    assert 1 <= len(sub.streams) and all(isinstance(s, str) and s for s in sub.streams)
    assert math.isfinite(sub.max_sync_delay) and 0 <= sub.max_sync_delay <= 3600
    wire = json.loads(json.dumps(sub.to_dict(), allow_nan=False))
    assert from_dict(wire) == sub


@FUZZ
@given(header=json_values | st.fixed_dictionaries({"parts": st.lists(
    st.fixed_dictionaries({"length": st.integers(-3, 2**40) | json_values, "keys": json_values,
                           "sizes": st.lists(st.integers(-3, 100), max_size=3) | json_values,
                           "form": json_values, "stream": json_values, "file": json_values}), max_size=2)}),
       body=st.binary(max_size=128))
def test_record_data_from_a_hostile_server_raises_only_protocol_errors(header, body):
    try:
        parts = decode_parts(Data(header=header if isinstance(header, dict) else {"parts": header},
                                  body=memoryview(body)))
    except ProtocolError:
        return
    for p in parts:
        assert isinstance(p.entries, np.ndarray)


# ------------------------------------------------------------------ request values at their edges

EDGE_NUMBERS = st.one_of(
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**400, 10**4000, 1e308, -0.0, 5e-324, 604800, 604800.0001]),
    st.integers(), st.floats(allow_nan=False, allow_infinity=False),
)
EDGE_INTS = st.one_of(st.sampled_from([0, 1, -1, 2**31, 2**63, 10**9, 10**9 + 1, 10**400, 10**4000]), st.integers())
EDGE_TEXT = st.one_of(st.text(max_size=20), st.sampled_from(["\ud800", "a\udcff.root", "x" * 5000, "..", ""]))
REQUEST_HEADERS = st.one_of(
    st.fixed_dictionaries({"type": st.just("next"), "timeout": EDGE_NUMBERS},
                          optional={"advance_by": EDGE_INTS, "prefetch": EDGE_INTS}),
    st.fixed_dictionaries({"type": st.just("next_batch"), "max_records": EDGE_INTS, "timeout": EDGE_NUMBERS}),
    st.fixed_dictionaries({"type": st.just("go_to_next_file"), "timeout": EDGE_NUMBERS}),
    st.fixed_dictionaries({"type": st.just("go_to_file"), "name": EDGE_TEXT}),
    st.fixed_dictionaries({"type": st.just("rewind"), "file": EDGE_TEXT,
                           "consumed": st.dictionaries(EDGE_TEXT, EDGE_INTS, max_size=3)}),
)


@settings(max_examples=300, deadline=None)
@given(headers=st.lists(REQUEST_HEADERS, min_size=1, max_size=6))
def test_requests_with_edge_values_are_messages_or_short_invalid_requests(headers):
    """A server Connection hands out each request, in order, as the message or as an
    InvalidRequest whose reason quotes the peer's value short; the conversation goes on."""
    server = protocol.Connection("server")
    hello = json.dumps({"type": "hello", "protocol": 1}).encode()
    server.receive_data(protocol.PREFIX.pack(len(hello), 0) + hello)
    assert isinstance(server.next_message(), protocol.Hello)
    server.send(protocol.Welcome(1, "fuzz", 1))
    for header in headers:
        head = json.dumps(header).encode()
        server.receive_data(protocol.PREFIX.pack(len(head), 0) + head)
        msg = server.next_message()
        if isinstance(msg, protocol.InvalidRequest):
            assert msg.request == header["type"] and len(msg.reason) < 200, msg.reason
            server.send(protocol.Error(protocol.MessageType.BAD_SUBSCRIPTION, msg.reason))
        else:
            assert msg is not None and msg.TYPE == header["type"]
            server.send(protocol.Ok())
