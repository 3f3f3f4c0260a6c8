"""The core slice end to end: real ddsparentserver processes, real ROOT files, real sockets."""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from clients import (
    DDSClient,
    DDSConnectionError,
    DDSError,
    DDSTimeout,
    KeepUp,
    MessageType,
    RecordBatch,
    RecordSet,
    Subscription,
)
from conftest import BIN, Server, snarl_data, write_file
from dispatcher.protocol import PROTOCOL_VERSION, SERVER_MAX_BODY, SERVER_MAX_HEADER, FrameDecoder, Hello, encode
from dispatcher.testing import free_port, wait_until

SNARL = "DaqSnarl"
MONITOR = "DaqMonitor"

# --------------------------------------------------------------------------- helpers


def fname(run: int, sub: int = 1) -> str:
    return f"F{run:08d}_{sub:04d}.mdaq.root"


def connect(server, **kw) -> DDSClient:
    return DDSClient(server.host, server.port, connect_timeout=5.0, **kw)


def sub_all(streams=(SNARL,), start="oldest", **kw) -> Subscription:
    return Subscription(streams=streams, keep_up="all", start=start, **kw)


def rows(branches: dict) -> list[dict]:
    """``{branch: array}`` -> one plain dict per entry, as the client returns records."""
    cols = {k: (ak.to_list(v) if isinstance(v, ak.Array) else np.asarray(v).tolist()) for k, v in branches.items()}
    n = len(next(iter(cols.values())))
    return [{k: cols[k][i] for k in cols} for i in range(n)]


def monitor_data(first: int, n: int) -> dict:
    """A second stream with a jagged branch (uproot adds its counter branch ``ncounts``)."""
    counts = ak.values_astype(ak.Array([list(range(first + i, first + i + (i % 4))) for i in range(n)]), np.int32)
    return {"t": np.arange(first, first + n, dtype=np.float64) / 8.0, "counts": counts}


def monitor_rows(first: int, n: int) -> list[dict]:
    out = rows(monitor_data(first, n))
    for r in out:
        r["ncounts"] = len(r["counts"])
    return out


def write_snarl_files(data_dir, sizes, *, steps=3) -> list[tuple[str, int, dict]]:
    """Write one file per size; return the expected (file, entry, record) in serving order."""
    expected, first = [], 0
    for i, n in enumerate(sizes):
        name = fname(1000 + i)
        data = snarl_data(first, n)
        write_file(Path(data_dir) / name, {SNARL: data}, steps=steps)
        expected += [(name, e, r) for e, r in enumerate(rows(data))]
        first += n
    return expected


def drain_next(client, count: int, timeout: float = 10.0) -> list[RecordSet]:
    return [client.next(timeout=timeout) for _ in range(count)]


def ps(*args) -> str:
    return subprocess.run(["ps", *args], capture_output=True, text=True, timeout=10).stdout


def zombies_of(pid: int) -> list[str]:
    return [line for line in ps("-o", "pid=,stat=", "--ppid", str(pid)).splitlines() if line.split()[1].startswith("Z")]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def run_cmd(*args, env=None, timeout=20.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else os.environ.copy())


class RawServer(Server):
    """A ddsparentserver started with exactly the given arguments (the fixture's Server adds -d, -p, -b)."""

    def __init__(self, log_path, args, env):
        self.log_path = Path(log_path)
        self.data_dir = None
        self.proc = subprocess.Popen([str(BIN / "ddsparentserver"), *args, "--log-file", str(self.log_path)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.port = self._wait_port()
        self.host = "127.0.0.1"


@pytest.fixture
def raw_servers():
    started = []

    def start(log_path, args, env=None):
        s = RawServer(log_path, args, env if env is not None else os.environ.copy())
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def raw_exchange(server, payload: bytes, *, hello_first: bool = False, timeout: float = 8.0):
    """Send ``payload`` on a bare socket; return the frames the server answered before closing."""
    decoder = FrameDecoder(SERVER_MAX_HEADER, SERVER_MAX_BODY)
    frames = []
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        if hello_first:  # let a child take the connection first
            sock.sendall(b"".join(bytes(c) for c in encode(Hello(PROTOCOL_VERSION, "raw"))))
            while (frame := decoder.next_frame()) is None:
                data = sock.recv(65536)
                assert data, "closed before the welcome"
                decoder.feed(data)
            frames.append(frame[0])
        try:
            sock.sendall(payload)
        except OSError:
            pass  # the server may close before it read everything
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            decoder.feed(data)
            while (frame := decoder.next_frame()) is not None:
                frames.append(frame[0])
        else:
            raise AssertionError("server kept the connection open")
    return frames


# --------------------------------------------------------------------------- exact delivery


def test_all_mode_from_oldest_serves_every_record_exactly_with_next(data_dir, server_factory):
    expected = write_snarl_files(data_dir, [23, 7, 31, 12])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(sub_all())
        got = drain_next(c, len(expected))
        assert [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in got] == expected
        assert all(rs.stream == SNARL and set(rs.records) == {SNARL} and rs.missing == () for rs in got)
        with pytest.raises(DDSTimeout):
            c.next(timeout=0.3)  # never twice, never more


def test_all_mode_from_oldest_serves_every_record_exactly_with_next_batch(data_dir, server_factory):
    expected = write_snarl_files(data_dir, [23, 7, 31, 12])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(sub_all())
        got = []
        for _ in range(len(expected)):
            if len(got) == len(expected):
                break
            b = c.next_batch(max_records=10, timeout=10)
            assert isinstance(b, RecordBatch) and b.stream == SNARL
            assert 1 <= len(b) <= 10 and len(b.entries) == len(b)
            assert b.entries.dtype == np.int64
            assert isinstance(b.arrays, ak.Array)
            got += [(b.file, int(e), r) for e, r in zip(b.entries, ak.to_list(b.arrays))]
        assert got == expected
        with pytest.raises(DDSTimeout):
            c.next_batch(max_records=10, timeout=0.3)


def test_next_and_next_batch_mixed_continue_where_the_other_left_off(data_dir, server_factory):
    expected = write_snarl_files(data_dir, [15, 15])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(sub_all())
        got = [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in drain_next(c, 4)]
        b = c.next_batch(max_records=5, timeout=10)
        got += [(b.file, int(e), r) for e, r in zip(b.entries, ak.to_list(b.arrays))]
        got += [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in drain_next(c, len(expected) - len(got))]
        assert got == expected


def test_multi_stream_subscription_keeps_per_stream_order_when_a_file_lacks_a_stream(data_dir, server_factory):
    # file 0: both streams; file 1: only DaqSnarl; file 2: both
    layout = [(12, 5), (9, 0), (6, 8)]
    exp = {SNARL: [], MONITOR: []}
    s_first = m_first = 0
    for i, (ns, nm) in enumerate(layout):
        name = fname(2000 + i)
        streams = {SNARL: snarl_data(s_first, ns)}
        exp[SNARL] += [(name, e, r) for e, r in enumerate(rows(streams[SNARL]))]
        if nm:
            streams[MONITOR] = monitor_data(m_first, nm)
            exp[MONITOR] += [(name, e, r) for e, r in enumerate(monitor_rows(m_first, nm))]
        write_file(data_dir / name, streams, steps=2)
        s_first += ns
        m_first += nm
    server = server_factory(data_dir)
    total = len(exp[SNARL]) + len(exp[MONITOR])
    with connect(server) as c:
        c.subscribe(sub_all(streams=(SNARL, MONITOR)))
        got = drain_next(c, total)
        with pytest.raises(DDSTimeout):
            c.next(timeout=0.3)
    per_stream = {SNARL: [], MONITOR: []}
    for rs in got:
        assert rs.stream in per_stream
        per_stream[rs.stream].append((rs.file, rs.entries[rs.stream], rs[rs.stream]))
    assert per_stream == exp
    files = [rs.file for rs in got]
    assert files == sorted(files), "records of a later file came before those of an earlier one"


# --------------------------------------------------------------------------- position


def test_advance_by_skips_records_within_and_across_files(data_dir, server_factory):
    expected = write_snarl_files(data_dir, [20, 20])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(sub_all())
        rs = c.next(timeout=10, advance_by=3)
        assert (rs.file, rs.entries[SNARL]) == expected[2][:2]
        assert rs[SNARL] == expected[2][2]
        assert c.next(timeout=10).entries[SNARL] == 3
        drain_next(c, 14)  # up to entry 17 of the first file
        rs = c.next(timeout=10, advance_by=5)  # 18, 19 | 0, 1, 2
        assert (rs.file, rs.entries[SNARL], rs[SNARL]) == expected[22]
        assert c.next(timeout=10).entries[SNARL] == 3
        with pytest.raises(DDSError) as info:
            c.next(timeout=1, advance_by=0)
        assert info.value.message_type == MessageType.BAD_SUBSCRIPTION
        assert c.next(timeout=10).entries[SNARL] == 4
        with pytest.raises(DDSTimeout):
            c.next(timeout=0.3, advance_by=100)
        assert c.is_valid()


def test_start_current_begins_at_entry_zero_of_the_newest_file(data_dir, server_factory):
    expected = write_snarl_files(data_dir, [5, 6, 7])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(Subscription(streams=[SNARL], keep_up="all", start="current"))
        got = drain_next(c, 7)
        assert [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in got] == expected[11:]
    with connect(server) as c:  # "current" is also the default
        c.subscribe(Subscription(streams=[SNARL], keep_up=KeepUp.ALL))
        assert (c.next(timeout=10).file, c.next(timeout=10).entries[SNARL]) == (fname(1002), 1)


def test_start_at_a_file_name_begins_there_and_continues_into_later_files(data_dir, server_factory):
    expected = write_snarl_files(data_dir, [5, 6, 7])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(sub_all(start=fname(1001)))
        got = drain_next(c, 13)
        assert [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in got] == expected[5:]
    with connect(server) as c:
        with pytest.raises(DDSError) as info:
            c.subscribe(sub_all(start="F99999999_0001.mdaq.root"))
        assert info.value.message_type in (MessageType.NO_FILE, MessageType.BAD_SUBSCRIPTION)
        assert c.is_valid()
        c.subscribe(sub_all(start=fname(1002)))
        assert (c.next(timeout=10).file, c.next(timeout=10).entries[SNARL]) == (fname(1002), 1)


def test_next_timeout_is_a_dds_timeout_and_the_session_goes_on(data_dir, server_factory):
    expected = write_snarl_files(data_dir, [4])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(sub_all())
        drain_next(c, 4)
        t0 = time.monotonic()
        with pytest.raises(DDSTimeout) as info:
            c.next(timeout=0.5)
        elapsed = time.monotonic() - t0
        assert 0.4 <= elapsed < 10.0  # a server that never answered would take the client's 30 s reply margin
        err = info.value
        assert isinstance(err, TimeoutError) and isinstance(err, DDSError)
        assert err.message_type == MessageType.TIMEOUT
        assert str(err)
        assert c.is_valid()
        # the DAQ moves on: a new file appears while the client is subscribed
        new = snarl_data(100, 3)
        write_file(data_dir / fname(1001), {SNARL: new})
        got = drain_next(c, 3)
        assert [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in got] == [
            (fname(1001), e, r) for e, r in enumerate(rows(new))]
        assert expected[-1][0] == fname(1000)


def test_next_batch_timeout_is_a_dds_timeout_and_the_session_goes_on(data_dir, server):
    with connect(server) as c:  # empty data directory
        c.subscribe(sub_all())
        t0 = time.monotonic()
        with pytest.raises(DDSTimeout):
            c.next_batch(max_records=5, timeout=0.4)
        assert time.monotonic() - t0 < 10.0  # not the client's 30 s reply margin
        data = snarl_data(0, 3)
        write_file(data_dir / fname(1), {SNARL: data})
        b = c.next_batch(max_records=5, timeout=10)
        assert b.file == fname(1) and ak.to_list(b.arrays) == rows(data)


# --------------------------------------------------------------------------- go_to_file


def test_go_to_file_moves_back_to_entry_zero_of_that_file(data_dir, server_factory):
    expected = write_snarl_files(data_dir, [8, 8])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(sub_all())
        drain_next(c, 12)
        assert c.go_to_file(fname(1000)) == fname(1000)
        got = drain_next(c, 16)
        assert [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in got] == expected


def test_go_to_file_refuses_every_name_outside_the_data_dir_and_the_session_goes_on(data_dir, tmp_path,
                                                                                     server_factory):
    expected = write_snarl_files(data_dir, [6, 6])
    outside = tmp_path / "outside.root"
    write_file(outside, {SNARL: snarl_data(500, 4)})
    (data_dir / "link.root").symlink_to(outside)
    (data_dir / "sub").mkdir()
    write_file(data_dir / "sub" / "inner.root", {SNARL: snarl_data(600, 4)})
    server = server_factory(data_dir)
    attempts = ["..", ".", "../outside.root", "../x.root", str(outside), str(data_dir / fname(1000)),
                "link.root", "sub", "sub/inner.root", "./" + fname(1000), fname(1000) + "\x00", "\x00",
                "", "F99999999_0001.mdaq.root", fname(1000) + "/..", "..\\outside.root"]
    with connect(server) as c:
        c.subscribe(sub_all())
        got = drain_next(c, 3)
        for name in attempts:
            with pytest.raises(DDSError) as info:
                c.go_to_file(name)
            assert info.value.message_type == MessageType.NO_FILE, name
            assert c.is_valid()
        # the position did not move: the rest of both files, and nothing from outside
        got += drain_next(c, len(expected) - 3)
        assert [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in got] == expected
        with pytest.raises(DDSTimeout):
            c.next(timeout=0.3)
    with connect(server) as c:  # the symlink is not the open file either
        c.subscribe(Subscription(streams=[SNARL], keep_up="all", start="current"))
        assert c.next(timeout=10).file == fname(1001)


def test_go_to_next_file_moves_to_the_following_file_at_once(data_dir, server_factory):
    expected = write_snarl_files(data_dir, [5, 5, 5])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(sub_all())
        drain_next(c, 2)
        assert c.go_to_next_file(timeout=5) == fname(1001)
        got = drain_next(c, 10)
        assert [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in got] == expected[5:]


def test_go_to_next_file_times_out_on_the_newest_file_then_waits_for_a_new_one(data_dir, server_factory):
    write_snarl_files(data_dir, [3])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(sub_all())
        c.next(timeout=10)
        t0 = time.monotonic()
        with pytest.raises(DDSTimeout) as info:
            c.go_to_next_file(timeout=0.5)
        assert time.monotonic() - t0 < 10.0  # not the client's 30 s reply margin
        assert info.value.message_type == MessageType.TIMEOUT
        new = snarl_data(50, 4)
        writer = threading.Timer(0.3, write_file, (data_dir / fname(1001), {SNARL: new}))
        writer.start()
        try:
            assert c.go_to_next_file(timeout=20) == fname(1001)
        finally:
            writer.join(20)
        got = drain_next(c, 4)
        assert [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in got] == [
            (fname(1001), e, r) for e, r in enumerate(rows(new))]


# --------------------------------------------------------------------------- the forking server


def test_client_beyond_max_clients_gets_server_busy_at_once_and_gets_in_after_one_leaves(data_dir, server_factory):
    write_snarl_files(data_dir, [3])
    server = server_factory(data_dir, "-m", "2")
    a, b = connect(server), connect(server)
    try:
        t0 = time.monotonic()
        with pytest.raises(DDSError) as info:
            connect(server)
        assert time.monotonic() - t0 < 4.0  # at once: not after the 5 s handshake timeout
        assert info.value.message_type == MessageType.SERVER_BUSY
        assert not isinstance(info.value, DDSTimeout)
        assert "busy" in server.log
        a.close()

        def get_in():
            try:
                return connect(server)
            except DDSError as exc:
                assert exc.message_type == MessageType.SERVER_BUSY
                return None

        c = wait_until(get_in, 10.0, "a free slot after a client left", pause=0.05)
        with c:
            c.subscribe(sub_all())
            assert c.next(timeout=10).entries[SNARL] == 0
        b.subscribe(sub_all())
        assert b.next(timeout=10).entries[SNARL] == 0
    finally:
        a.close()
        b.close()


def test_a_killed_child_leaves_the_parent_and_other_clients_serving(data_dir, server_factory):
    expected = write_snarl_files(data_dir, [10])
    server = server_factory(data_dir)
    a = connect(server)
    victim = wait_until(lambda: server.children(), 10, what="the first child")[0]
    b = connect(server)
    wait_until(lambda: len(server.children()) == 2, 10, what="the second child")
    try:
        for c in (a, b):
            c.subscribe(sub_all())
            assert c.next(timeout=10).entries[SNARL] == 0
        drain_next(a, 9)  # nothing left that the client may hold already
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in server.children(), 10, what="the killed child to be reaped")
        with pytest.raises(DDSError):
            a.next(timeout=5)
        assert not a.is_valid()
        got = drain_next(b, 9)
        assert [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in got] == expected[1:]
        with connect(server) as c:
            c.subscribe(sub_all())
            assert c.next(timeout=10)[SNARL] == expected[0][2]
        assert server.proc.poll() is None
        wait_until(lambda: re.search(rf"child {victim} .*killed by SIGKILL", server.log), 10,
                   what="the parent's log line about the killed child")
    finally:
        a.close()
        b.close()


def test_many_connect_disconnect_cycles_leave_no_zombies_and_no_descriptor_growth(data_dir, server_factory):
    write_snarl_files(data_dir, [3])
    server = server_factory(data_dir)
    pid = server.proc.pid
    with connect(server) as c:  # warm up
        c.subscribe(sub_all())
        c.next(timeout=10)
    wait_until(lambda: not server.children(), 10, what="the warm-up child to be reaped")
    before = fd_count(pid)
    for i in range(60):
        c = connect(server)
        if i % 10 == 0:
            c.subscribe(sub_all())
            assert c.next(timeout=10).entries[SNARL] == 0
        c.close()
    wait_until(lambda: not server.children(), 15, what="every child to exit and be reaped")
    assert zombies_of(pid) == []
    after = fd_count(pid)
    assert after <= before + 3, f"parent descriptors grew from {before} to {after}"
    assert server.proc.poll() is None
    assert len(re.findall(r"connected: child", server.log)) == 61


def header_frame(header: bytes) -> bytes:
    return struct.pack("!II", len(header), 0) + header


GARBAGE = {
    "random": np.random.default_rng(7).bytes(4096),
    "http-get": b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
    "huge-header-prefix": struct.pack("!II", 2**32 - 1, 0) + b"x" * 100,
    "huge-body-prefix": struct.pack("!II", 20, 2**32 - 1) + b"x" * 100,
    "not-utf8": header_frame(b"\xff" * 10),
    "not-an-object": header_frame(b"[]"),
    "bad-json": header_frame(b'{"type":"next",}'),
    "nan": header_frame(b'{"type":"next","timeout":NaN}'),
    "deep": header_frame(b"[" * 30000 + b"]" * 30000),
    "unknown-type": header_frame(b'{"type":"pickle","data":"gASVCAAAAAAAAACMBHBvc3iULg=="}'),
}


@pytest.mark.parametrize("when", ["before-hello", "after-hello"])
def test_garbage_on_the_port_is_refused_and_the_server_keeps_serving(data_dir, server_factory, when):
    write_snarl_files(data_dir, [2])
    server = server_factory(data_dir)
    for name, garbage in GARBAGE.items():
        frames = raw_exchange(server, garbage, hello_first=(when == "after-hello"))
        if when == "after-hello":
            assert frames and frames[0]["type"] == "welcome", name
            frames = frames[1:]
        assert len(frames) <= 1, name
        assert all(f["type"] == "error" and f["code"] == "PROTOCOL_ERROR" for f in frames), (name, frames)
        with connect(server) as c:
            c.subscribe(sub_all())
            assert c.next(timeout=10).entries[SNARL] == 0, name
        assert server.proc.poll() is None, name
    assert server.log.count("protocol error") >= len(GARBAGE)
    wait_until(lambda: not server.children(), 10, what="every child to exit")


def test_a_connection_that_never_completes_its_hello_is_dropped(data_dir, server_factory):
    server = server_factory(data_dir, "--handshake-timeout", "0.5")
    t0 = time.monotonic()
    frames = raw_exchange(server, struct.pack("!II", 100, 0) + b'{"type":', timeout=10)
    assert time.monotonic() - t0 < 8.0
    assert [f.get("code") for f in frames] in ([], ["PROTOCOL_ERROR"])
    with connect(server) as c:
        assert c.is_valid()


def test_a_wrong_protocol_version_is_refused_by_the_parent(data_dir, server):
    frames = raw_exchange(server, b"".join(bytes(c) for c in encode(Hello(PROTOCOL_VERSION + 99, "future"))))
    assert len(frames) == 1 and frames[0]["code"] == "PROTOCOL_ERROR"
    assert str(PROTOCOL_VERSION) in frames[0]["message"]
    assert server.children() == []


def test_children_are_named_in_process_listings_and_log_lines(data_dir, server_factory):
    write_snarl_files(data_dir, [2])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(sub_all())
        c.next(timeout=10)
        client_port = c._sock.getsockname()[1]
        (child,) = wait_until(lambda: server.children(), 10, what="the child")
        assert ps("-o", "args=", "-p", str(child)).strip() == f"ddschildserver 127.0.0.1:{client_port}"
    wait_until(lambda: not server.children(), 10, what="the child to exit")
    ident = f"ddschildserver[{child}] 127.0.0.1:{client_port}"
    child_lines = [line for line in server.log.splitlines() if f"[{child}]" in line]
    assert child_lines and all(ident in line for line in child_lines)
    assert re.search(rf"client 127\.0\.0\.1:{client_port} connected: child {child}", server.log)
    assert re.search(rf"child {child} \(client 127\.0\.0\.1:{client_port}\) exited with status 0", server.log)


# --------------------------------------------------------------------------- stopping


def test_ddscomm_stops_the_server_which_exits_zero_and_ends_its_children(data_dir, server_factory):
    write_snarl_files(data_dir, [2])
    server = server_factory(data_dir)
    c = connect(server)
    (child,) = wait_until(lambda: server.children(), 10, what="the child")
    try:
        result = run_cmd("ddscomm", "-s", "-p", str(server.port))
        assert result.returncode == 0, result.stderr
        assert f"localhost:{server.port}" in result.stdout and "shutting down" in result.stdout
        assert server.proc.wait(10) == 0
        wait_until(lambda: not Path(f"/proc/{child}").exists(), 10, what="the child to be gone")
        with pytest.raises(DDSError) as info:
            c.next(timeout=5)
        assert info.value.message_type in (MessageType.SHUTDOWN, MessageType.SERVER_ERROR)
        assert "shutdown requested by 127.0.0.1" in server.log
    finally:
        c.close()


def test_ddscomm_without_a_server_exits_one_naming_the_address():
    port = free_port()
    result = run_cmd("ddscomm", "-s", "-p", str(port))
    assert result.returncode == 1
    assert f"no ddsparentserver at localhost:{port}" in result.stderr


def test_parentserver_without_a_data_dir_exits_two_with_a_clear_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DDS_DAQ_DATA_DIR"}
    result = run_cmd("ddsparentserver", "-p", "0", "-b", "127.0.0.1", env=env)
    assert result.returncode == 2
    assert "DDS_DAQ_DATA_DIR" in result.stderr and "-d" in result.stderr
    missing = run_cmd("ddsparentserver", "-p", "0", "-d", str(tmp_path / "nope"), env=env)
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_data_dir_from_the_environment_is_served(data_dir, tmp_path, raw_servers):
    expected = write_snarl_files(data_dir, [4])
    env = {**os.environ, "DDS_DAQ_DATA_DIR": str(data_dir)}
    server = raw_servers(tmp_path / "env.log", ["-p", "0", "-b", "127.0.0.1"], env)
    with connect(server) as c:
        c.subscribe(sub_all())
        got = drain_next(c, 4)
    assert [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in got] == expected
    assert str(data_dir) in server.log


def test_minos_style_attached_options_work(data_dir, tmp_path, raw_servers):
    write_snarl_files(data_dir, [2])
    server = raw_servers(tmp_path / "minos.log", ["-p0", "-m3", "-lVerbose", "-b127.0.0.1", f"-d{data_dir}"])
    assert re.search(r"listening on 127\.0\.0\.1:\d+ .*at most 3 clients", server.log)
    with connect(server) as c:
        c.subscribe(sub_all())
        c.next(timeout=10)
    wait_until(lambda: "VERBOSE" in server.log, 10, what="a verbose log line")
    assert server.stop() == 0


def test_sigterm_ends_a_waiting_client_with_shutdown_and_the_parent_exits_zero(data_dir, server_factory):
    write_snarl_files(data_dir, [2])
    server = server_factory(data_dir)
    with connect(server) as c:
        c.subscribe(sub_all())
        drain_next(c, 2)
        (child,) = wait_until(lambda: server.children(), 10, what="the child")
        killer = threading.Timer(0.5, server.proc.send_signal, (signal.SIGTERM,))
        killer.start()
        t0 = time.monotonic()
        try:
            with pytest.raises(DDSError) as info:
                c.next(timeout=30)
        finally:
            killer.join(10)
        assert info.value.message_type == MessageType.SHUTDOWN
        assert not isinstance(info.value, DDSTimeout)
        assert server.proc.wait(10) == 0
        assert time.monotonic() - t0 < 8.0
        assert not c.is_valid()
    assert not Path(f"/proc/{child}").exists()
    assert "SIGTERM" in server.log and "stopped" in server.log


# --------------------------------------------------------------------------- the client API


def test_client_without_a_server_raises_a_connection_error_naming_the_address():
    port = free_port()
    with pytest.raises(DDSConnectionError) as info:
        DDSClient("127.0.0.1", port, connect_timeout=2.0)
    err = info.value
    assert isinstance(err, ConnectionError) and isinstance(err, DDSError)
    assert f"127.0.0.1:{port}" in str(err)


def test_client_validity_close_and_context_manager(data_dir, server):
    c = connect(server)
    assert c.is_valid()
    (child,) = wait_until(lambda: server.children(), 10, what="the child")
    c.close()
    assert not c.is_valid()
    c.close()  # twice is fine
    with pytest.raises(DDSConnectionError):
        c.next(timeout=1)
    wait_until(lambda: child not in server.children(), 10, what="the child to exit after close")
    with connect(server) as c2:
        assert c2.is_valid()
        (child2,) = wait_until(lambda: server.children(), 10, what="the second child")
    assert not c2.is_valid()
    wait_until(lambda: child2 not in server.children(), 10, what="the child to exit after the with block")
    c3 = connect(server)
    c3.shutdown()
    assert not c3.is_valid()


def test_every_message_type_has_a_readable_line():
    names = ["OK", "TIMEOUT", "NO_FILE", "BAD_SUBSCRIPTION", "BAD_SELECTION", "SERVER_BUSY", "SHUTDOWN",
             "PROTOCOL_ERROR", "SERVER_ERROR"]
    lines = [getattr(MessageType, n).as_string() for n in names]
    assert all(isinstance(line, str) and len(line) > 8 for line in lines)
    assert len(set(lines)) == len(lines)
    assert "busy" in MessageType.SERVER_BUSY.as_string().lower()


def test_next_before_subscribe_is_bad_subscription_and_the_session_goes_on(data_dir, server_factory):
    expected = write_snarl_files(data_dir, [3])
    server = server_factory(data_dir)
    with connect(server) as c:
        for call in (lambda: c.next(timeout=1), lambda: c.next_batch(10, timeout=1)):
            with pytest.raises(DDSError) as info:
                call()
            assert info.value.message_type == MessageType.BAD_SUBSCRIPTION
            assert "subscribe" in str(info.value)
            assert c.is_valid()
        c.subscribe(sub_all())
        assert [(rs.file, rs.entries[SNARL], rs[SNARL]) for rs in drain_next(c, 3)] == expected


def test_invalid_subscriptions_raise_and_the_session_goes_on(data_dir, server_factory):
    write_snarl_files(data_dir, [3])
    server = server_factory(data_dir)
    with pytest.raises(ValueError, match="keep_up"):
        Subscription(keep_up="sideways")
    with pytest.raises(ValueError, match="prescale"):
        Subscription(prescale=0)
    for minos, mode in (("All", KeepUp.ALL), ("FileKeepUp", KeepUp.FILE), ("RecordKeepUp", KeepUp.RECORD)):
        assert Subscription(keep_up=minos).keep_up is mode
    with connect(server) as c:
        with pytest.raises(DDSError) as info:
            c.subscribe(keep_up="sideways")
        assert info.value.message_type == MessageType.BAD_SUBSCRIPTION and "keep_up" in str(info.value)
        with pytest.raises(DDSError) as info:
            c.subscribe(sub_all(branches={SNARL: ["nhit"]}))
        assert info.value.message_type == MessageType.BAD_SUBSCRIPTION and "nhits" in str(info.value)
        assert c.is_valid()
        c.subscribe(streams=[SNARL], keep_up="All", start="oldest")
        assert c.next(timeout=10).entries[SNARL] == 0
