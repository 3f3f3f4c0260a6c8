"""Faults around a running server: a killed parent, vanished and stalled clients, a killed child, a lost log file.

Each test makes the fault happen for real (signals, processes, a socket that is
never read, a file removed) and checks what a shift operator relies on: nothing
is left behind, the other clients go on, and the log says what happened.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from clients import DDSClient, DDSError, Subscription
from conftest import end, snarl_data, write_file
from dispatcher.testing import stalled_transfer, wait_until

FILE = "F00000001_0000.mdaq.root"




def live_processes() -> dict[int, str]:
    """pid -> command line of every process that is not a zombie."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, timeout=10).stdout
    procs = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and not parts[1].startswith("Z"):
            procs[int(parts[0])] = parts[2]
    return procs


def client_process(port: int, stream: str = "Nothing") -> subprocess.Popen:
    """A client in its own process, waiting inside next() for a stream that never comes."""
    code = (
        "from clients import DDSClient, Subscription\n"
        f"c = DDSClient('127.0.0.1', {port}, connect_timeout=10)\n"
        f"c.subscribe(Subscription(streams=[{stream!r}], keep_up='all'))\n"
        "print('waiting', flush=True)\n"
        "c.next(timeout=120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "waiting", proc.stderr.read()
    return proc


def child_of(client: DDSClient) -> int:
    """The pid of the ddschildserver serving ``client`` (its title names the client's address)."""
    me = f"ddschildserver 127.0.0.1:{client._sock.getsockname()[1]}"
    pids = [pid for pid, args in live_processes().items() if args.strip() == me]
    assert len(pids) == 1, (me, pids)
    return pids[0]


@pytest.fixture
def served_dir(data_dir):
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, 100)})
    return data_dir


def test_children_exit_when_the_parent_is_killed(served_dir, server_factory):
    server = server_factory(served_dir)
    waiting = client_process(server.port)  # a child inside next()
    idle = DDSClient(server.host, server.port)  # a child between requests
    try:
        idle.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        children = wait_until(lambda: len(server.children()) == 2 and server.children(), what="two children")
        assert all("ddschildserver 127.0.0.1:" in live_processes()[pid] for pid in children)

        server.proc.kill()  # SIGKILL: the parent cannot tell anyone
        server.proc.wait(5)
        wait_until(lambda: not set(children) & set(live_processes()), timeout=5, what="children gone")
        # the clients learn of it: the one waiting inside next() gets an answer, not a hang
        assert waiting.wait(10) != 0
        with pytest.raises(DDSError):
            idle.next(timeout=5)
    finally:
        idle.close()
        end(waiting)
    log = server.log
    assert log.count("server stopping: telling the client") + log.count("parent server is gone") == 2


def test_child_exits_when_its_client_is_killed(served_dir, server_factory):
    server = server_factory(served_dir)
    waiting = client_process(server.port)
    try:
        child = wait_until(server.children, what="a child")[0]
        other = DDSClient(server.host, server.port)
        try:
            other.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
            waiting.send_signal(signal.SIGKILL)  # no close, no goodbye
            waiting.wait(5)
            wait_until(lambda: child not in server.children(), timeout=5, what="child gone")
            assert other.next(timeout=5)["DaqSnarl"]["evt"] == 0  # the other session is untouched
        finally:
            other.close()
    finally:
        end(waiting)
    wait_until(lambda: f"child {child} (client" in server.log, what="reap logged")
    assert "client left" in server.log
    assert f"child {child} (client 127.0.0.1:" in server.log and "exited with status 0" in server.log


def test_killed_child_is_reaped_and_logged_and_others_go_on(served_dir, server_factory):
    server = server_factory(served_dir)
    victim = DDSClient(server.host, server.port)
    other = DDSClient(server.host, server.port)
    try:
        for c in (victim, other):
            c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        wait_until(lambda: len(server.children()) == 2, what="two children")
        pid = child_of(victim)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: f"child {pid} (client" in server.log, what="the kill logged")
        assert "killed by SIGKILL" in server.log
        with pytest.raises(DDSError):
            victim.next(timeout=5)
        got = [other.next(timeout=5)["DaqSnarl"]["evt"] for _ in range(3)]
        assert got == [0, 1, 2]
        with DDSClient(server.host, server.port) as fresh:  # and new clients are still taken
            fresh.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
            assert fresh.next(timeout=5)["DaqSnarl"]["evt"] == 0
    finally:
        victim.close()
        other.close()
    assert server.proc.poll() is None


def test_client_that_stops_reading_is_dropped_and_others_read_on(data_dir, server_factory):
    n = 400_000  # about 10 MB per batch: more than both socket buffers hold
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, n)})
    server = server_factory(data_dir, "--stall-timeout", "1")
    stalled, _ = stalled_transfer(server, n)  # ... which never reads the answer
    try:
        with DDSClient(server.host, server.port) as reader:
            reader.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
            seen = 0
            for _ in range(1000):
                batch = reader.next_batch(50_000, timeout=10)
                assert batch.entries[0] == seen
                seen += len(batch.entries)
                if seen == n:
                    break
            assert seen == n

        wait_until(lambda: "client stopped reading for 1 s: dropped" in server.log, what="the stall logged")
        wait_until(lambda: len(server.children()) == 0, what="the stalled child gone")
    finally:
        stalled.close()
    assert server.proc.poll() is None


def test_logging_goes_on_after_the_log_file_is_removed(served_dir, server_factory):
    server = server_factory(served_dir)
    with DDSClient(server.host, server.port) as dds:
        dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        assert dds.next(timeout=5)["DaqSnarl"]["evt"] == 0
    wait_until(lambda: "client left" in server.log, what="first session logged")
    server.log_path.unlink()
    with DDSClient(server.host, server.port) as dds:  # the parent and a new child both log again
        dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        assert dds.next(timeout=5)["DaqSnarl"]["evt"] == 0
    log = wait_until(lambda: "client left" in server.log and server.log, what="logging resumed")
    assert "ddsparentserver[" in log and "connected: child" in log
    assert "ddschildserver[" in log and "session started" in log
    assert "listening on" not in log  # a new file, not the old one brought back
    assert server.stop() == 0
    assert "stopped" in server.log


def test_server_stop_with_a_client_mid_transfer_ends_within_seconds(data_dir, server_factory):
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, 400_000)})
    server = server_factory(data_dir, "--stall-timeout", "30")
    stalled, _ = stalled_transfer(server, 400_000)
    try:
        wait_until(server.children, what="a child")
        time.sleep(0.3)  # the child is now blocked writing to a client that does not read
        start = time.monotonic()
        server.proc.terminate()
        assert server.proc.wait(25) == 0
        assert time.monotonic() - start < 20  # graceful limit, then SIGKILL: never the 30 s stall limit
    finally:
        stalled.close()
    # how the child ended is logged (blocked in a write, it outlives the graceful limit and is killed)
    assert re.search(r"child \d+ \(client 127\.0\.0\.1:\d+\) (exited with status 0|killed by SIGKILL)", server.log)
    assert "stopped" in server.log
