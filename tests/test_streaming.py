"""Streamed batches: the server sends ahead within a credit window, and nothing changes for the client.

In-process (the session and its stream, fake time), sans-IO (the conversation's
states) and against a real server: the same script of calls gives the same records
with streaming on and off, whatever was sent ahead when the client moved,
resubscribed, switched to next() or timed out.
"""

from __future__ import annotations

import os
import time

import awkward as ak
import numpy as np
import pytest

from clients import DDSClient, DDSTimeout, Subscription
from conftest import snarl_data, write_file
from dispatcher import protocol as P
from dispatcher.catalog import Catalog
from dispatcher.clock import FakeClock
from dispatcher.protocol import Connection, Credit, Data, EndStream, Error, MessageType, Ok, StreamBatches
from dispatcher.session import Session, SessionError
from dispatcher.streaming import BatchStream

A, B, C = "F00000001_0000.mdaq.root", "F00000001_0001.mdaq.root", "F00000001_0002.mdaq.root"


def closed_file(data, name: str, first: int, n: int, steps: int = 3) -> dict:
    d = snarl_data(first, n)
    write_file(data / name, {"DaqSnarl": d}, steps=steps)
    past = time.time() - 60
    os.utime(data / name, (past, past))
    return d


def sub(**kw) -> Subscription:
    return Subscription(**{"streams": ["DaqSnarl"], "keep_up": "all", "start": "oldest", **kw})


@pytest.fixture
def session(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    clock = FakeClock(start=1000.0)
    s = Session(Catalog(str(data)), clock, poll_interval=0.01, clock=clock)
    s.data = data  # type: ignore[attr-defined]
    yield s
    s.close()


def evts(parts) -> list[int]:
    return [int(e) for p in parts for e in p.arrays["evt"]]


def batch_evts(session, n=7) -> list[int]:
    parts, _ = session.next_batch(n, 1.0)
    return evts(parts)


# ------------------------------------------------------------------ the session's side, in-process


def test_ending_a_stream_serves_again_every_reply_not_consumed(session):
    d = closed_file(session.data, A, 0, 60)
    session.subscribe(sub(selection="kind != 1", prescale=2))
    truth = list(d["evt"][d["kind"] != 1][::2])
    stream = BatchStream(session, 5, window=3)
    sent = [evts(stream.next_reply(session.position.deadline(1.0))[0]) for _ in range(3)]
    assert sum(sent, []) == truth[:15]
    assert stream.credits == 0
    stream.credit(1)
    stream.end(consumed=1)  # the client used the first reply only
    assert batch_evts(session, 100) == truth[5:]


def test_a_stream_never_leaves_a_file_while_the_client_holds_replies_from_it(session):
    closed_file(session.data, A, 0, 10)
    closed_file(session.data, B, 10, 10)
    session.subscribe(sub())
    stream = BatchStream(session, 10, window=3)
    assert evts(stream.next_reply(session.position.deadline(1.0))[0]) == list(range(10))
    assert stream.next_reply(session.position.deadline(1.0)) is None  # A is done; B waits for the credit
    assert session.file == A
    stream.credit(1)
    assert evts(stream.next_reply(session.position.deadline(1.0))[0]) == list(range(10, 20))
    assert session.file == B


def test_a_move_nothing_was_consumed_from_is_undone(session):
    closed_file(session.data, A, 0, 10)
    closed_file(session.data, B, 10, 10)
    closed_file(session.data, C, 20, 10)
    session.subscribe(sub())
    stream = BatchStream(session, 10, window=3)
    stream.next_reply(session.position.deadline(1.0))
    stream.credit(1)
    stream.next_reply(session.position.deadline(1.0))  # moved to B; the client never took it
    assert stream.end(consumed=1) == {"file": A}
    assert session.go_to_next_file(1.0) == {"file": B}  # the file after A, as without streaming
    assert batch_evts(session, 100) == list(range(10, 20))


def test_a_consumed_move_stays(session):
    closed_file(session.data, A, 0, 10)
    closed_file(session.data, B, 10, 30)
    session.subscribe(sub())
    stream = BatchStream(session, 10, window=2)
    for i in range(3):
        stream.next_reply(session.position.deadline(1.0))
        if i < 2:
            stream.credit(1)
    stream.end(consumed=2)  # A's and B's first reply used; B's second one is served again
    assert session.file == B
    assert batch_evts(session, 100) == list(range(20, 40))


def test_record_mode_and_sync_do_not_stream(session):
    closed_file(session.data, A, 0, 10)
    session.subscribe(sub(keep_up="record"))
    with pytest.raises(SessionError) as exc:
        BatchStream(session, 10, window=2)
    assert exc.value.message_type is MessageType.BAD_SUBSCRIPTION


# ------------------------------------------------------------------ the conversation, sans-IO


def pair() -> tuple[Connection, Connection]:
    client, server = Connection("client"), Connection("server")
    for msg, src, dst in ((P.Hello(P.PROTOCOL_VERSION), client, server),
                          (P.Welcome(P.PROTOCOL_VERSION, "s", 1), server, client)):
        dst.receive_data(b"".join(bytes(c) for c in src.send(msg)))
        dst.next_message()
    return client, server


def carry(src: Connection, dst: Connection, msg) -> object:
    dst.receive_data(b"".join(bytes(memoryview(c)) for c in src.send(msg)))
    return dst.next_message()


def test_a_stream_runs_on_credits_and_ends_with_ok_after_the_replies_on_the_way():
    client, server = pair()
    assert isinstance(carry(client, server, StreamBatches(10, 5.0, 2)), StreamBatches)
    assert client.state is P.STREAMING and server.state is P.STREAMING
    for _ in range(2):
        assert isinstance(carry(server, client, Data({"parts": []})), Data)
    assert isinstance(carry(client, server, Credit(1)), Credit)
    in_flight = server.send(Data({"parts": []}))  # crosses the client's end_stream
    assert isinstance(carry(client, server, EndStream(1)), EndStream)
    assert client.state is P.ENDING and server.state is P.BUSY
    client.receive_data(b"".join(bytes(memoryview(c)) for c in in_flight))
    assert isinstance(client.next_message(), Data) and client.state is P.ENDING
    assert isinstance(carry(server, client, Ok({})), Ok)
    assert client.state is P.IDLE and server.state is P.IDLE
    with pytest.raises(P.LocalProtocolError):
        client.send(Credit(1))  # no stream, no credit


def test_an_error_ends_a_stream_and_a_late_credit_or_end_is_taken_in():
    client, server = pair()
    carry(client, server, StreamBatches(10, 5.0, 3))
    late = client.send(Credit(1))
    carry(server, client, Error(MessageType.TIMEOUT, "nothing"))
    assert client.state is P.IDLE and server.state is P.IDLE
    server.receive_data(b"".join(bytes(memoryview(c)) for c in late))
    assert isinstance(server.next_message(), Credit) and server.state is P.IDLE
    with pytest.raises(P.LocalProtocolError):  # the stream is over: no more data
        server.send(Data({"parts": []}))


def test_stream_values_are_checked_when_built():
    for bad in (lambda: StreamBatches(10, 1.0, 0), lambda: StreamBatches(10, 1.0, P.MAX_WINDOW + 1),
                lambda: Credit(0), lambda: EndStream(-1)):
        with pytest.raises(P.InvalidMessage):
            bad()


# ------------------------------------------------------------------ a real server: the same records either way


def script(c: DDSClient) -> list:
    """A session that moves, resubscribes, mixes next() in and times out, as a list of what it got."""
    out: list = []

    def batch(n, timeout=5.0):
        b = c.next_batch(n, timeout=timeout)
        out.append((b.file, [int(e) for e in b.entries], ak.to_list(b.arrays["evt"])))

    c.subscribe(sub(selection="kind != 2", prescale=2))
    for n in (3, 3, 3, 5):  # a new max_records ends the stream and starts another
        batch(n)
    for advance_by in (1, 1, 3, 1, 1):  # next() streams sets; a skip asks the server directly
        rs = c.next(timeout=5, advance_by=advance_by)
        out.append(("next", rs.file, rs.entries["DaqSnarl"]))
    batch(4)
    for _ in range(7):
        rs = c.next(timeout=5)
        out.append(("next", rs.file, rs.entries["DaqSnarl"]))
    c.subscribe(sub(start="current"))  # from just after the last record used
    batch(4)
    c.go_to_file(B)
    batch(2)
    c.go_to_file(A)
    got = 0
    while got < 60:  # to the end of A (60 records), then the file after it: B, wherever the stream went
        b = c.next_batch(50, timeout=5)
        out.append((b.file, len(b)))
        got += len(b)
    out.append(("go_to_next_file", c.go_to_next_file(timeout=5)))
    batch(10)
    try:
        while True:
            batch(40, timeout=0.3)
    except DDSTimeout:
        out.append("timeout")
    return out


def test_the_same_calls_give_the_same_records_with_and_without_streaming(data_dir, server_factory):
    for i, name in enumerate((A, B, C)):
        closed_file(data_dir, name, 100 * i, 60 + 10 * i)
    server = server_factory(data_dir)
    got = {}
    for window, prefetch in ((0, 256), (1, 256), (3, 256), (3, 4)):
        with DDSClient(server.host, server.port, window=window, prefetch=prefetch) as c:
            got[window, prefetch] = script(c)
    first = got[0, 256]
    assert all(g == first for g in got.values())
    assert first[-1] == "timeout" and ("go_to_next_file", B) in first


def test_a_streamed_batch_equals_uproot(data_dir, server_factory):
    d = closed_file(data_dir, A, 0, 5000, steps=7)
    closed_file(data_dir, B, 5000, 10)
    server = server_factory(data_dir)
    with DDSClient(server.host, server.port, window=3) as c:
        c.subscribe(sub(selection="nhits > 20"))
        entries, evt = [], []
        while len(evt) < int(np.count_nonzero(d["nhits"] > 20)):
            b = c.next_batch(300, timeout=5)
            assert b.file == A
            entries += list(b.entries)
            evt += ak.to_list(b.arrays["evt"])
    assert evt == list(d["evt"][d["nhits"] > 20])
    assert entries == list(np.flatnonzero(d["nhits"] > 20))


# ------------------------------------------------------------------ lean wire: entry ranges, frames received in place


def test_consecutive_entries_travel_as_a_range_and_come_back_the_same():
    from dispatcher.columnar import Part, decode_parts, encode_parts

    arrays = ak.Array({"evt": np.arange(5, 15)})
    parts = [Part("S", A, np.arange(5, 15, dtype=np.int64), arrays),
             Part("T", A, np.array([1, 4, 9], dtype=np.int64), ak.Array({"evt": [1, 4, 9]}))]
    msg = encode_parts(parts, ranges=True)
    assert [("entry_start" in d) for d in msg.header["parts"]] == [True, False]
    body = b"".join(bytes(memoryview(c)) for c in msg.body)
    assert len(body) == 10 * 8 + 3 * 8 + 3 * 8  # no entry numbers for the range
    back = decode_parts(Data(msg.header, memoryview(body)))
    assert [list(p.entries) for p in back] == [list(range(5, 15)), [1, 4, 9]]
    for bad in (-1, True, "0", 2**63):
        header = {"parts": [dict(msg.header["parts"][0], entry_start=bad)]}
        with pytest.raises(P.RemoteProtocolError):
            decode_parts(Data(header, memoryview(body[:80])))
    huge = {"parts": [dict(msg.header["parts"][0], length=10**12)]}
    with pytest.raises(P.RemoteProtocolError):
        decode_parts(Data(huge, memoryview(body[:80])))


def test_a_frame_received_in_place_equals_one_fed_in_pieces():
    frames = [b"".join(bytes(memoryview(c)) for c in P.encode(m)) for m in
              (Data({"parts": []}, b"x" * 300_000), Ok({"file": A}), Data({"parts": []}, bytes(range(256)) * 999))]
    stream = b"".join(frames)
    for step in (1, 7, 4096, 70_000, len(stream)):
        dec = P.FrameDecoder(P.SERVER_MAX_HEADER, P.SERVER_MAX_BODY)
        got, pos = [], 0
        while pos < len(stream):
            view = dec.reserve() if step > 4096 else None
            if view is not None:  # as recv_into would: at most what the view holds
                k = min(len(view), step, len(stream) - pos)
                view[:k] = stream[pos:pos + k]
                dec.filled(k)
            else:
                k = min(step, len(stream) - pos)
                dec.feed(stream[pos:pos + k])
            pos += k
            while (frame := dec.next_frame()) is not None:
                got.append((frame[0], bytes(frame[1])))
        assert got == [(P.json.loads(f[8:8 + P.PREFIX.unpack_from(f)[0]]), f[8 + P.PREFIX.unpack_from(f)[0]:])
                       for f in frames]


def test_next_over_a_stream_of_sets_gives_back_what_it_did_not_hand_out(session):
    d = closed_file(session.data, A, 0, 40)
    session.subscribe(sub(selection="kind != 3"))
    truth = list(d["evt"][d["kind"] != 3])
    stream = BatchStream(session, 5, window=2, sets=5)
    first = stream.next_reply(session.position.deadline(1.0))
    second = stream.next_reply(session.position.deadline(1.0))
    assert evts(first[0]) + evts(second[0]) == truth[:10]
    stream.end(consumed=1, partial={"DaqSnarl": 2})  # the first reply and two sets of the second used
    assert batch_evts(session, 100) == truth[7:]


def test_a_long_stream_keeps_only_the_replies_not_yet_consumed(session):
    closed_file(session.data, A, 0, 200)
    session.subscribe(sub())
    stream = BatchStream(session, 5, window=2)
    for _ in range(30):
        stream.next_reply(session.position.deadline(1.0))
        stream.credit(1)
        assert len(stream.sent) == 0
    stream.next_reply(session.position.deadline(1.0))
    assert len(stream.sent) == 1 and stream.total == 31
    stream.end(consumed=30)
    assert batch_evts(session, 5) == list(range(150, 155))


# ------------------------------------------------------------------ with the rest of the server
# (rewind rule, reply bound, compression, freshness, unserved, status counts, resume)


def test_a_rewind_after_a_stream_refers_to_no_reply_and_is_refused(session):
    closed_file(session.data, A, 0, 40)
    session.subscribe(sub())
    for sets in (0, 4):
        stream = BatchStream(session, 4, window=2, sets=sets)
        stream.next_reply(session.position.deadline(1.0))
        stream.end(consumed=0)
        with pytest.raises(SessionError) as exc:
            session.rewind(A, {"DaqSnarl": 0})
        assert exc.value.message_type is MessageType.BAD_SUBSCRIPTION
    assert batch_evts(session, 100) == list(range(40))  # nothing moved: each stream gave all back


def test_streamed_replies_carry_lag_and_age_as_a_next_batch_reply_does(session):
    closed_file(session.data, A, 0, 30)
    closed_file(session.data, B, 30, 20)
    session.subscribe(sub())
    stream = BatchStream(session, 10, window=3)
    parts, _ = stream.next_reply(session.position.deadline(1.0))
    assert parts[0].lag == 20 + 20  # the rest of A and all of B
    assert parts[0].age
    stream.end(consumed=0)
    plain, _ = session.next_batch(10, 1.0)
    assert plain[0].lag == parts[0].lag and plain[0].entries.tolist() == parts[0].entries.tolist()


def test_streamed_replies_stay_within_the_byte_limit_and_lose_nothing(session, monkeypatch):
    import uproot

    from dispatcher import reader

    monkeypatch.setattr(reader, "MAX_REPLY_BYTES", 64 * 1024)
    with uproot.recreate(session.data / A) as f:
        f.mktree("DaqSnarl", {"evt": np.int64, "blob": np.dtype((np.float64, (1024,)))})
        for first in range(0, 40, 10):  # 8 KiB records: 8 fit in a reply
            f["DaqSnarl"].extend({"evt": np.arange(first, first + 10), "blob": np.zeros((10, 1024))})
    past = time.time() - 60
    os.utime(session.data / A, (past, past))
    session.subscribe(sub())
    for sets in (0, 1000):
        stream = BatchStream(session, 1000, window=2, sets=sets)
        seen: list[int] = []
        while len(seen) < 40:
            parts, _ = stream.next_reply(session.position.deadline(1.0))
            assert 0 < sum(p.arrays.nbytes for p in parts) <= 64 * 1024
            seen += evts(parts)
            stream.credit(1)
        assert seen == list(range(40))
        stream.end(consumed=stream.total)
        session.go_to_file(A)


def served(c: DDSClient) -> list:
    """Batches and sets of every file, with what each says of freshness and unserved branches."""
    out: list = []
    c.subscribe(sub())
    for _ in range(6):
        b = c.next_batch(25, timeout=5)
        out.append((b.file, b.entries.tolist(), ak.to_list(b.arrays), b.lag, b.unserved, b.age is not None))
    c.go_to_file(B)
    for _ in range(40):
        rs = c.next(timeout=5)
        out.append((rs.file, rs.entries, rs.records, rs.lag, rs.unserved, rs.age is not None))
    return out


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_streamed_replies_are_compressed_and_give_the_same_records_and_freshness(data_dir, server_factory,
                                                                                 monkeypatch, codec):
    import clients.client as client_mod

    for i, name in enumerate((A, B, C)):
        # B is big enough that its sets after the first reply (a short one) make a reply worth compressing
        closed_file(data_dir, name, 1000 * i, 150 if name == B else 60 + 10 * i)
    server = server_factory(data_dir)
    with DDSClient(server.host, server.port, window=0) as c:
        plain = served(c)
    codecs: list = []
    decompress = client_mod.decompress_data
    monkeypatch.setattr(client_mod, "decompress_data", lambda m: (codecs.append(m.header.get("compression")),
                                                                  decompress(m))[1])
    with DDSClient(server.host, server.port, window=3, compression=codec) as c:
        assert served(c) == plain
        assert c._stream is not None  # it did stream
    assert codec in codecs


def test_streamed_replies_name_the_branches_the_server_cannot_serve(data_dir, server):
    import shutil

    corpus = __import__("pathlib").Path(__file__).resolve().parent / "data" / "corpus" / "uproot-issue-1229.root"
    shutil.copy(corpus, data_dir / A)
    got = {}
    for window in (0, 3):
        with DDSClient(server.host, server.port, window=window) as c:
            reply = c.subscribe(Subscription(streams=("tree",), keep_up="all", start="oldest"))
            b = c.next_batch(timeout=10)
            c.go_to_file(A)
            rs = c.next(timeout=10)
            got[window] = (b.unserved, rs.unserved, b.entries.tolist())
            assert b.unserved["tree"] == reply["unserved"]["tree"] and rs.unserved == reply["unserved"]
    assert got[0] == got[3]


def test_streamed_replies_are_counted_in_the_status_metrics(data_dir, server_factory):
    from test_status import scrape

    closed_file(data_dir, A, 0, 60)
    closed_file(data_dir, B, 60, 40)
    server = server_factory(data_dir, "--metrics-port", "0")
    with DDSClient(server.host, server.port, window=3, prefetch=16) as c:
        c.subscribe(sub())
        assert len(c.next_batch(10, timeout=5)) == 10  # two more replies come ahead, and are never used
        c.go_to_file(A)
        got = [c.next(timeout=5).entries["DaqSnarl"] for _ in range(100)]
    assert got == list(range(60)) + list(range(40))  # entries count from 0 in each file
    deadline = time.monotonic() + 8
    while True:  # what the client used, once: not what was sent ahead and served again
        m = scrape(server)
        if m.get(("dds_records_sent_total", (("stream", "DaqSnarl"),)), 0) == 110:
            break
        assert time.monotonic() < deadline, m
        time.sleep(0.2)
    assert m[("dds_bytes_sent_total", ())] > 0


@pytest.mark.parametrize("how", ["next", "next_batch"])
def test_a_resumed_client_delivers_each_streamed_record_once(data_dir, server_factory, how):
    n = 400
    for i, name in enumerate((A, B, C)):
        write_file(data_dir / name, {"DaqSnarl": snarl_data(i * n, n)}, steps=4)
    a = server_factory(data_dir)
    b = server_factory(data_dir)

    def take(dds) -> list[int]:
        if how == "next":
            return [dds.next(timeout=10)["DaqSnarl"]["evt"]]
        return [int(e) for e in dds.next_batch(70, timeout=10).arrays.evt]

    with DDSClient([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], resume=True, connect_timeout=5,
                   window=3, prefetch=32) as dds:
        dds.subscribe(sub())
        got: list[int] = []
        while len(got) < n + 50:  # into the second file, with replies sent ahead on the way
            got += take(dds)
        assert dds._stream is not None
        a.stop()
        while len(got) < 3 * n:
            got += take(dds)
        assert dds.port == b.port
    assert got == list(range(3 * n))
