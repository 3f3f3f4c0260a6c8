"""Faults in the data and the disk: files truncated, replaced or deleted while read, the data
directory removed and restored, a log file on a full disk. The server keeps serving."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from clients import DDSClient, DDSTimeout, Subscription
from conftest import BIN, snarl_data, write_file
from dispatcher.testing import free_port

BIG = 60_000


def drain(client, timeout=1.0, limit=200):
    """(file, first entry, last entry) of each batch until the first timeout."""
    seen = []
    for _ in range(limit):
        try:
            b = client.next_batch(5000, timeout=timeout)
        except DDSTimeout:
            break
        seen.append((b.file, int(b.entries[0]), int(b.entries[-1])))
    return seen


def all_mode(server, **kw):
    c = DDSClient(server.host, server.port, **kw)
    c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
    return c


def test_file_truncated_while_being_read_is_skipped_and_the_next_file_served(data_dir, server):
    a, b = data_dir / "F00000001_0000.mdaq.root", data_dir / "F00000001_0001.mdaq.root"
    write_file(a, {"DaqSnarl": snarl_data(0, BIG)}, steps=30)
    write_file(b, {"DaqSnarl": snarl_data(BIG, 100)})
    with all_mode(server) as c:
        first = c.next_batch(1000, timeout=5)
        assert first.file == a.name
        with open(a, "r+b") as f:
            f.truncate(os.path.getsize(a) // 3)
        seen = drain(c)
    assert (b.name, 0, 99) in seen, seen
    # what was served of the truncated file was served in order and never twice
    starts = [s for f, s, _ in seen if f == a.name]
    assert starts == sorted(starts) and all(s > first.entries[-1] for s in starts)
    assert server.proc.poll() is None
    assert any("WARNING" in line and a.name in line for line in server.log.splitlines()), server.log


def test_file_replaced_while_being_read_does_not_break_the_session(data_dir, server):
    a, b = data_dir / "F00000002_0000.mdaq.root", data_dir / "F00000002_0001.mdaq.root"
    write_file(a, {"DaqSnarl": snarl_data(0, BIG)}, steps=30)
    write_file(b, {"DaqSnarl": snarl_data(BIG, 100)})
    with all_mode(server) as c:
        c.next_batch(1000, timeout=5)
        tmp = data_dir / "replacement.tmp"
        write_file(tmp, {"DaqSnarl": snarl_data(10**6, 10)})
        os.replace(tmp, a)
        seen = drain(c)
    assert seen and seen[-1] == (b.name, 0, 99)
    assert server.proc.poll() is None


def test_file_deleted_while_being_read_is_skipped_and_the_next_file_served(data_dir, server):
    a, b = data_dir / "F00000003_0000.mdaq.root", data_dir / "F00000003_0001.mdaq.root"
    write_file(a, {"DaqSnarl": snarl_data(0, BIG)}, steps=30)
    write_file(b, {"DaqSnarl": snarl_data(BIG, 100)})
    with all_mode(server) as c:
        c.next_batch(1000, timeout=5)
        a.unlink()
        seen = drain(c)
    assert seen[-1] == (b.name, 0, 99)
    assert server.proc.poll() is None


def test_data_directory_removed_and_restored_is_served_again(data_dir, server):
    write_file(data_dir / "F00000004_0000.mdaq.root", {"DaqSnarl": snarl_data(0, 10)})
    with all_mode(server) as c:
        assert len(c.next_batch(100, timeout=5)) == 10
        shutil.rmtree(data_dir)
        try:
            c.next_batch(100, timeout=0.5)
        except DDSTimeout:
            pass
        data_dir.mkdir()
        write_file(data_dir / "F00000004_0001.mdaq.root", {"DaqSnarl": snarl_data(10, 5)})
        b = c.next_batch(100, timeout=10)
    assert b.file == "F00000004_0001.mdaq.root" and b.entries.tolist() == list(range(5))
    log = server.log
    assert "cannot list data directory" in log and "readable again" in log
    assert log.count("cannot list data directory") <= 2  # once per child, not at every poll


def test_latest_on_an_empty_directory_serves_every_record_of_the_first_file(data_dir, server):
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="latest"))
        write_file(data_dir / "F00000005_0000.mdaq.root", {"DaqSnarl": snarl_data(0, 7)})
        b = c.next_batch(100, timeout=10)
    assert b.entries.tolist() == list(range(7))


def test_log_file_on_a_full_disk_does_not_stop_the_server(data_dir):
    write_file(data_dir / "F00000006_0000.mdaq.root", {"DaqSnarl": snarl_data(0, 50)})
    port = free_port()
    # /dev/full fails every write with ENOSPC, like a log disk that filled up
    proc = subprocess.Popen([str(BIN / "ddsparentserver"), "-p", str(port), "-b", "127.0.0.1", "-d", str(data_dir),
                             "-l", "Verbose", "--log-file", "/dev/full"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        client = None
        while client is None:
            try:
                client = all_mode(type("S", (), {"host": "127.0.0.1", "port": port})())
            except ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, "server did not come up"
                time.sleep(0.05)
        with client:
            assert len(client.next_batch(100, timeout=5)) == 50
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        proc.stderr.close()
    assert proc.returncode == 0
