"""The parent's signals and stops, against real ddsparentserver processes on loopback.

Graceful stop (SIGTERM) and fast stop (SIGINT) differ in their deadline; a
SIGINT during a stop kills the remaining children at once; however a child
ends, even by a signal Python has no name for, the parent logs the cause and
serves on. A child that stays in a stop is made real: a client that never reads
a 10 MB answer keeps its child blocked in a send.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time

import pytest

from clients import DDSClient, KeepUp, Subscription
from conftest import end, snarl_data, write_file
from dispatcher.parent import GRACEFUL_SECONDS, describe_status
from dispatcher.testing import stalled_transfer, wait_until

FILE = "F00000001_0000.mdaq.root"
BIG = 400_000  # records: an answer of about 10 MB, more than both socket buffers hold
REALTIME_SIGNAL = 40  # SIGRTMIN+6 on Linux: signal.Signals cannot name it


def reap_line(log: str, pid: int) -> str:
    """The parent's line about how child ``pid`` ended ('' while there is none)."""
    found = re.search(rf"child {pid} \(client [^)]*\) ((?:exited|killed) .*)$", log, re.M)
    return found.group(1) if found else ""


def new_child(server, known: set) -> int:
    """The one child of ``server`` not in ``known``."""
    fresh = wait_until(lambda: set(server.children()) - known, what="a new child")
    assert len(fresh) == 1, fresh
    return fresh.pop()


@pytest.fixture
def served_dir(data_dir):
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, 100)})
    return data_dir


@pytest.fixture
def big_dir(data_dir):
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, BIG)})
    return data_dir


@pytest.fixture
def no_core_dumps():
    """Children killed by SIGSEGV or SIGABRT leave no core file behind."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def subscribed(server) -> DDSClient:
    c = DDSClient(server.host, server.port)
    c.subscribe(Subscription(streams=("DaqSnarl",), keep_up=KeepUp.ALL, start="oldest"))
    return c


# --------------------------------------------------------------------------- how children end


def test_every_signal_number_is_described_without_raising():
    high = getattr(signal, "SIGRTMAX", 64)
    for signum in range(1, high + 1):
        text = describe_status(signum)  # the wait status of a process killed by signum
        assert text.startswith("killed by "), (signum, text)
    assert describe_status(REALTIME_SIGNAL).endswith(f"(signal {REALTIME_SIGNAL})")
    assert describe_status(signal.SIGKILL) == "killed by SIGKILL (out of memory?)"
    assert describe_status(0x80 | signal.SIGSEGV) == "killed by SIGSEGV (crash)"  # with a core dump
    assert describe_status(0) == "exited with status 0"
    assert describe_status(3 << 8) == "exited with status 3"


def test_child_killed_by_a_realtime_signal_is_reaped_logged_and_the_parent_serves_on(served_dir, server_factory):
    server = server_factory(served_dir)
    victim = subscribed(server)
    other = None
    try:
        pid = new_child(server, set())
        other = subscribed(server)
        wait_until(lambda: len(server.children()) == 2, what="two children")
        os.kill(pid, REALTIME_SIGNAL)
        line = wait_until(lambda: reap_line(server.log, pid), what="the reap logged")
        assert line.startswith("killed by ") and line.endswith(f"(signal {REALTIME_SIGNAL})"), line
        assert server.proc.poll() is None
        assert [other.next(timeout=5)["DaqSnarl"]["evt"] for _ in range(3)] == [0, 1, 2]
        with subscribed(server) as fresh:  # and a new client is taken
            assert fresh.next(timeout=5)["DaqSnarl"]["evt"] == 0
    finally:
        victim.close()
        if other is not None:
            other.close()
    assert "Traceback" not in server.log
    assert server.stop() == 0


@pytest.mark.usefixtures("no_core_dumps")
def test_reap_log_names_the_cause_of_each_end(served_dir, server_factory):
    server = server_factory(served_dir)
    causes = {
        signal.SIGSEGV: "killed by SIGSEGV (crash)",
        signal.SIGKILL: "killed by SIGKILL (out of memory?)",
        signal.SIGABRT: "killed by SIGABRT (aborted)",
    }
    clients: list[DDSClient] = []
    pids: dict[signal.Signals, int] = {}  # signal -> the child it is sent to
    try:
        for sig in causes:
            clients.append(subscribed(server))
            pids[sig] = new_child(server, set(pids.values()))
        for sig, pid in pids.items():
            os.kill(pid, sig)
        for sig, pid in pids.items():
            assert wait_until(lambda pid=pid: reap_line(server.log, pid), what=f"child {pid}") == causes[sig]
        with subscribed(server):
            pid = new_child(server, set(pids.values()))
        assert wait_until(lambda: reap_line(server.log, pid), what="the clean end") == "exited with status 0"
    finally:
        for c in clients:
            c.close()
    assert server.proc.poll() is None
    assert server.stop() == 0


# --------------------------------------------------------------------------- stopping


def test_sigterm_exits_zero_and_a_client_waiting_in_next_gets_shutdown(served_dir, server_factory):
    server = server_factory(served_dir, "-l", "Verbose")  # the child logs each request it takes
    code = (
        "from clients import DDSClient, DDSError, Subscription\n"
        f"c = DDSClient('127.0.0.1', {server.port}, connect_timeout=10)\n"
        "c.subscribe(Subscription(streams=['Nothing'], keep_up='all'))\n"
        "try:\n"
        "    c.next(timeout=60)\n"
        "except DDSError as exc:\n"
        "    print(exc.message_type.name, flush=True)\n"
    )
    client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # next() asks with Next, or starts a stream of sets (StreamBatches)
        wait_until(lambda: "request Next(" in server.log or "request StreamBatches(" in server.log,
                   what="the client inside next()")
        (child,) = server.children()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
        out, err = client.communicate(timeout=10)
        assert out.strip() == "SHUTDOWN", err
    finally:
        end(client)
    log = server.log
    assert "SIGTERM received: stopping" in log
    assert "server stopping: telling the client" in log
    assert reap_line(log, child) == "exited with status 0"
    assert "stopped" in log


def test_sigint_is_a_fast_stop_that_kills_a_stuck_child_after_one_second(big_dir, server_factory):
    server = server_factory(big_dir, "--stall-timeout", "30")
    stalled, _ = stalled_transfer(server, BIG)
    try:
        (child,) = server.children()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(10) == 0
    finally:
        stalled.close()
    log = server.log
    assert "SIGINT received: stopping fast" in log
    assert f"child {child} (client 127.0.0.1:" in log and "did not stop in 1 s; killing it" in log
    assert reap_line(log, child) == "killed by SIGKILL (stop deadline passed)"


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGINT], ids=["after-SIGTERM", "after-SIGINT"])
def test_second_sigint_during_a_stop_kills_a_stuck_child_at_once(first, big_dir, server_factory):
    server = server_factory(big_dir, "--stall-timeout", "30")
    stalled, _ = stalled_transfer(server, BIG)
    try:
        (child,) = server.children()
        server.proc.send_signal(first)
        wait_until(lambda: f"{signal.Signals(first).name} received: stopping" in server.log, what="the stop begun")
        began = time.monotonic()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(10) == 0
        took = time.monotonic() - began
    finally:
        stalled.close()
    log = server.log
    assert "SIGINT received while stopping: killing the remaining children at once (1)" in log
    assert reap_line(log, child) == "killed by SIGKILL (stop escalated)"
    assert "did not stop in" not in log  # ended by the escalation, not by the stop's deadline
    assert took < GRACEFUL_SECONDS
    assert "stopped" in log
