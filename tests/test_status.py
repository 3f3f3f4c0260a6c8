"""The operator's view against real servers: ddscomm --status, /metrics, freshness on record sets."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import uproot
from prometheus_client.parser import text_string_to_metric_families

from clients import DDSClient, DDSError, MessageType, Subscription
from conftest import BIN, ROOT, ddscomm, snarl_data, write_file
from dispatcher import status as status_mod
from dispatcher.freshness import Growth, LaterFiles
from dispatcher.statustext import render
from test_security import non_loopback_address

F0, F1, F2 = "F00000001_0000.mdaq.root", "F00000001_0001.mdaq.root", "F00000001_0002.mdaq.root"
N0, N1, N2 = 100, 50, 30
SCHEMA = json.loads((ROOT / "docs" / "status.schema.json").read_text())


@pytest.fixture
def three_files(data_dir):
    write_file(data_dir / F0, {"DaqSnarl": snarl_data(0, N0), "DaqMonitor": {"rate": np.arange(10.0)}})
    write_file(data_dir / F1, {"DaqSnarl": snarl_data(N0, N1)})
    write_file(data_dir / F2, {"DaqSnarl": snarl_data(N0 + N1, N2)})
    return data_dir


def status_json(server, *extra) -> dict:
    done = ddscomm("--status", "--json", "-H", server.host, "-p", str(server.port), *extra)
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    jsonschema.validate(st, SCHEMA)
    return st


def wait_for(server, check, seconds: float = 8.0) -> dict:
    """The first status (validated) for which ``check(status)`` holds; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        st = status_json(server)
        if check(st):
            return st
        assert time.monotonic() < deadline, f"status never matched: {json.dumps(st, indent=1)}"
        time.sleep(0.2)


def address(client: DDSClient) -> str:
    host, port = client._sock.getsockname()[:2]
    return f"{host}:{port}"


def kind(first: int, n: int) -> np.ndarray:
    return snarl_data(first, n)["kind"]


# ------------------------------------------------------------------ freshness on what clients get


def test_lag_is_exact_on_closed_files_for_sets_prefetched_sets_and_batches(three_files, server):
    after = N1 + N2  # records in the files after the first
    with DDSClient(server.host, server.port) as dds:
        dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        for i in range(3):  # prefetched sets: each its own lag
            rs = dds.next(timeout=5)
            assert rs.entries == {"DaqSnarl": i}
            assert rs.lag == {"DaqSnarl": N0 - i - 1 + after} and rs.skipped == {}
        batch = dds.next_batch(10, timeout=5)
        assert batch.entries.tolist() == list(range(3, 13))
        assert batch.lag == {"DaqSnarl": N0 - 13 + after}
        # a file already closed when first looked at: its age is from its modification time
        mtime = os.stat(three_files / F0).st_mtime
        assert batch.age == pytest.approx(time.time() - mtime, abs=1.0)
        dds.go_to_file(F1)
        batch = dds.next_batch(N1, timeout=5)
        assert batch.file == F1 and len(batch) == N1 and batch.lag == {"DaqSnarl": N2}
        dds.go_to_file(F2)
        batch = dds.next_batch(1000, timeout=5)
        assert len(batch) == N2 and batch.lag == {"DaqSnarl": 0}


def test_record_mode_counts_the_passing_records_it_skipped_also_across_files(three_files, server):
    passing = [np.flatnonzero(kind(0, N0) == 1), np.flatnonzero(kind(N0, N1) == 1),
               np.flatnonzero(kind(N0 + N1, N2) == 1)]
    newest = int(passing[2][-1])
    with DDSClient(server.host, server.port) as dds:
        dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="record", start="oldest", selection="kind == 1"))
        rs = dds.next(timeout=5)
        assert rs.file == F2 and rs.entries == {"DaqSnarl": newest}
        assert rs.skipped == {"DaqSnarl": len(passing[0]) + len(passing[1]) + len(passing[2]) - 1}
        assert rs.lag == {"DaqSnarl": N2 - newest - 1}
        dds.go_to_file(F2)  # back to its start: the newest three again, the older ones skipped
        batch = dds.next_batch(3, timeout=5)
        assert batch.entries.tolist() == passing[2][-3:].tolist()
        assert batch.skipped == {"DaqSnarl": len(passing[2]) - 3}


def test_lag_and_age_stay_bounded_while_the_daq_writes(data_dir, server):
    path = data_dir / F0
    written = [0]  # raised before each append lands, so it never trails what the server can see
    done = threading.Event()
    steps, per = 25, 20

    def daq(f, tree):
        try:
            for i in range(1, steps):
                written[0] += per
                tree.extend(snarl_data(i * per, per))
                time.sleep(0.04)
        finally:
            f.close()
            done.set()

    f = uproot.recreate(str(path))
    tree = f.mktree("DaqSnarl", {k: v.dtype for k, v in snarl_data(0, 1).items()})
    written[0] = per
    tree.extend(snarl_data(0, per))
    writer = threading.Thread(target=daq, args=(f, tree), daemon=True)
    with DDSClient(server.host, server.port) as dds:
        dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="current"))
        writer.start()
        got, deadline = 0, time.monotonic() + 20
        while got < steps * per and time.monotonic() < deadline:
            batch = dds.next_batch(1000, timeout=5)
            got += len(batch)
            last = int(batch.entries[-1])
            assert 0 <= batch.lag["DaqSnarl"] <= written[0] - last - 1
            assert 0 <= batch.age < 3.0
        writer.join(10)
        assert done.is_set() and got == steps * per
        assert batch.lag == {"DaqSnarl": 0}


# ------------------------------------------------------------------ ddscomm --status


def test_status_rows_show_each_clients_subscription_position_and_lag_and_a_killed_child_goes(three_files, server):
    every = DDSClient(server.host, server.port, prefetch=1)
    files = DDSClient(server.host, server.port)
    newest = DDSClient(server.host, server.port)
    try:
        every.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest", selection="nhits > 25"))
        served = [every.next(timeout=5).entries["DaqSnarl"] for _ in range(5)]
        files.subscribe(Subscription(streams=["DaqSnarl"], keep_up="file", start=F1))
        assert len(files.next_batch(20, timeout=5)) == 20
        newest.subscribe(Subscription(streams=["DaqSnarl", "DaqMonitor"], keep_up="record"))
        assert newest.next(timeout=5).entries == {"DaqSnarl": N2 - 1}

        st = wait_for(server, lambda st: sorted(sum(c["records_sent"].values()) for c in st["clients"]) == [1, 5, 20])
        rows = {c["address"]: c for c in st["clients"]}
        row = rows[address(every)]
        assert (row["streams"], row["keep_up"], row["selection"], row["file"]) == (
            ["DaqSnarl"], "all", "nhits > 25", F0)
        assert row["entries"] == {"DaqSnarl": served[-1] + 1}
        assert row["lag"] == {"DaqSnarl": N0 - served[-1] - 1 + N1 + N2}
        assert row["records_sent"] == {"DaqSnarl": 5} and row["lag_seconds"] > 0
        row = rows[address(files)]
        assert (row["keep_up"], row["file"], row["entries"], row["lag"]) == (
            "file", F1, {"DaqSnarl": 20}, {"DaqSnarl": N1 - 20 + N2})
        row = rows[address(newest)]
        assert (row["keep_up"], row["file"], row["lag"], row["lag_seconds"]) == ("record", F2, {"DaqSnarl": 0}, 0.0)
        assert row["entries"]["DaqSnarl"] == N2 and row["skipped"] == {"DaqSnarl": N2 - 1}
        assert row["state"] == "idle"
        srv = st["server"]
        assert (srv["clients"], srv["max_clients"], srv["files"], srv["open_file"]) == (3, 10, 3, F2)
        assert srv["data_dir"] == str(three_files) and srv["records_sent"] == {"DaqSnarl": 26}

        text = ddscomm("--status", "-H", server.host, "-p", str(server.port))
        assert text.returncode == 0, text.stderr
        assert "clients 3 of 10" in text.stdout and "nhits > 25" in text.stdout
        for c in (every, files, newest):
            assert address(c) in text.stdout

        victim = rows[address(files)]["pid"]
        os.kill(victim, signal.SIGKILL)
        st = wait_for(server, lambda st: victim not in [c["pid"] for c in st["clients"]])
        assert st["server"]["clients"] == 2 and st["server"]["child_exits"] == {"killed by SIGKILL": 1}
        assert every.next(timeout=5).entries["DaqSnarl"] > served[-1]  # the others are served on
    finally:
        for c in (every, files, newest):
            c.close()
    wait_for(server, lambda st: not st["clients"])
    assert re.search(r"session ended \(client left\) after [\d.]+ s: 6 records \(DaqSnarl 6\), \d+ bytes",
                     server.log)


def test_status_inside_a_data_session_is_forbidden(three_files, server):
    from dispatcher.protocol import Status

    with DDSClient(server.host, server.port) as dds, pytest.raises(DDSError) as info:
        dds._call(Status(), 5)
    assert info.value.message_type is MessageType.FORBIDDEN
    assert "metrics at" not in server.log  # off by default


def test_status_from_a_remote_peer_needs_the_admin_token(three_files, server_factory, tmp_path):
    remote = non_loopback_address()
    server = server_factory(three_files, "-b", remote)
    done = ddscomm("--status", "-H", remote, "-p", str(server.port))
    assert done.returncode == 1 and "refused the status" in done.stderr and done.stdout == ""
    assert f"status request from {remote}" in server.log
    token = tmp_path / "dds.token"
    token.write_text("0123456789-secret\n")
    token.chmod(0o600)
    server = server_factory(three_files, "-b", remote, "--token-file", str(token))
    server.host = remote
    assert status_json(server, "--token-file", str(token))["server"]["refused"]["forbidden"] == 0


def test_ddscomm_status_without_a_server_says_so(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = ddscomm("--status", "-H", "127.0.0.1", "-p", str(port))
    assert done.returncode == 1 and f"no ddsparentserver at 127.0.0.1:{port}" in done.stderr


def test_ddscomm_status_watch_redraws_until_ctrl_c(three_files, server):
    proc = subprocess.Popen([str(BIN / "ddscomm"), "--status", "--watch", "0.2", "-H", server.host,
                             "-p", str(server.port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert out.count("clients 0 of 10") >= 2


# ------------------------------------------------------------------ /metrics


def scrape(server) -> dict:
    port = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", server.log).group(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_exactly_the_records_the_clients_received(three_files, server_factory):
    server = server_factory(three_files, "-m", "2", "--metrics-port", "0")
    received = 0
    with DDSClient(server.host, server.port) as batches:
        batches.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        while received < N0 + N1 + N2:
            received += len(batches.next_batch(40, timeout=5))
        one = DDSClient(server.host, server.port, prefetch=1)
        one.subscribe(Subscription(streams=["DaqSnarl", "DaqMonitor"], keep_up="all", start="oldest"))
        got = [one.next(timeout=5).stream for _ in range(7)]
        with pytest.raises(DDSError) as info:
            DDSClient(server.host, server.port)
        assert info.value.message_type is MessageType.SERVER_BUSY
    want = {"DaqSnarl": received + got.count("DaqSnarl"), "DaqMonitor": got.count("DaqMonitor")}
    deadline = time.monotonic() + 8
    while True:
        m = scrape(server)
        sent = {s: m.get(("dds_records_sent_total", (("stream", s),)), 0) for s in want}
        if sent == want and m[("dds_clients", ())] == 1:
            break
        assert time.monotonic() < deadline, (sent, want, m)
        time.sleep(0.2)
    assert m[("dds_connections_refused_total", (("cause", "busy"),))] == 1
    assert m[("dds_connections_refused_total", (("cause", "forbidden"),))] == 0
    assert m[("dds_child_exits_total", (("cause", "client left"),))] == 1
    assert m[("dds_bytes_sent_total", ())] > 0 and m[("dds_files", ())] == 3
    pid = str(status_json(server)["clients"][0]["pid"])
    lags = {k[1]: v for k, v in m.items() if k[0] == "dds_client_lag_records"}
    assert any(("pid", pid) in labels for labels in lags)
    one.close()


# ------------------------------------------------------------------ the parts, alone


def test_growth_dates_entries_seen_at_the_first_look_by_mtime_and_later_ones_when_seen():
    g = Growth()
    g.note({"s": 10}, mtime=100.0, now=150.0)
    g.note({"s": 10}, mtime=151.0, now=152.0)  # no growth: nothing new
    g.note({"s": 25}, mtime=159.0, now=160.0)
    assert g.written("s", 0) == g.written("s", 9) == 100.0
    assert g.written("s", 10) == g.written("s", 24) == 160.0
    assert g.age_steps("s", np.arange(5, 20), now=170.0) == [[9, 70.0], [19, 10.0]]
    assert g.written("other", 0) is None


def test_later_files_are_counted_once_each_and_again_when_they_change(tmp_path):
    for name in ("a.root", "b.root", "c.root"):
        (tmp_path / name).write_bytes(b"x")
    opened = []

    def lengths(path):
        opened.append(Path(path).name)
        return {"s": 10 * len(opened), "t": 1}

    from dispatcher.catalog import Catalog

    later = LaterFiles(Catalog(str(tmp_path)), lengths)
    assert later.after("a.root") == {"s": 30, "t": 2} and opened == ["b.root", "c.root"]
    later._at = -1e9
    assert later.after("a.root") == {"s": 30, "t": 2} and len(opened) == 2  # unchanged files: not opened again
    assert later.after("c.root") == {}


def test_a_child_never_waits_for_a_parent_that_does_not_read():
    parent_end, child_end = status_mod.channel()
    with parent_end, child_end:
        reporter = status_mod.Reporter(child_end, "127.0.0.1:1")
        start = time.monotonic()
        for _ in range(5000):  # far more than the queue holds: the surplus is dropped
            reporter.send()
        assert time.monotonic() - start < 5.0
        board = status_mod.Board()
        row = board.add(os.getpid(), "127.0.0.1:1", parent_end)
        board.readable(row)
        assert row.snap["address"] == "127.0.0.1:1" and row.snap["state"] == "idle"


def test_text_status_has_the_server_lines_and_a_row_per_client():
    st = {"server": {"identity": "ddsparentserver/0.1.0 host pid 1", "uptime": 75.0, "state": "serving",
                     "data_dir": "/data", "files": 2, "open_file": "b.root", "clients": 1, "max_clients": 10,
                     "refused": {"busy": 1, "forbidden": 0, "bad hello": 0, "handshake timeout": 0},
                     "records_sent": {"s": 12}, "bytes_sent": 2500},
          "clients": [{"address": "10.0.0.1:5000", "pid": 42, "connected_for": 3.5, "streams": ["s"],
                       "keep_up": "all", "selection": "x > 1", "file": "a.root", "entries": {"s": 12},
                       "lag": {"s": 40}, "lag_seconds": 1.25, "records_sent": {"s": 12}, "bytes_sent": 2000,
                       "rate": 3.4, "state": "waiting for data"}]}
    text = render(st, "dds:9090")
    assert "up 1m15s" in text and "clients 1 of 10; refused: busy 1" in text and "open file b.root" in text
    row = text.splitlines()[-1].split()
    assert row[:7] == ["10.0.0.1:5000", "42", "3.5s", "s", "all", "x", ">"] and "1.25" in row
