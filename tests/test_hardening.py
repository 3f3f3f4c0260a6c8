"""Faults a hostile peer or an unlucky operator can cause, each made real against a real server.

Slots and processes: a child notices its client left also after bytes arrived
during a wait (plain and TLS close_notify); an orphan blocked in a send exits
at once. Requests: integer selections that trap in C, huge ``advance_by``,
NaN sync values, oversized replies, values out of range or not Unicode, stale
rewinds, huge protocol versions, and the client's own arguments.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import time

import numpy as np
import pytest
import uproot

from clients import DDSClient, DDSError, DDSTimeout, MessageType, Subscription
from conftest import snarl_data, write_file
from dispatcher.protocol import (
    PREFIX,
    PROTOCOL_VERSION,
    Connection,
    Error,
    Hello,
    Next,
    Ok,
    Subscribe,
    Welcome,
)
from dispatcher.testing import stalled_transfer, wait_until
from dispatcher.transport import recv_message, send_message

FILE = "F00000001_0000.mdaq.root"
SECONDS = 5.0




def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class Raw:
    """A well-formed conversation over a raw socket (after a real hello), for odd requests."""

    def __init__(self, server, sock=None):
        self.sock = sock or socket.create_connection((server.host, server.port), timeout=SECONDS)
        self.conn = Connection("client")
        send_message(self.sock, self.conn, Hello(PROTOCOL_VERSION, "hardening"))
        welcome = recv_message(self.sock, self.conn, SECONDS)
        assert isinstance(welcome, Welcome)
        self.pid = welcome.pid

    def call(self, request):
        send_message(self.sock, self.conn, request)
        return recv_message(self.sock, self.conn, SECONDS)

    def raw_call(self, header: dict):
        """Send a header as given (values a Message would refuse to build) and read the reply."""
        head = json.dumps(header).encode()
        self.sock.sendall(PREFIX.pack(len(head), 0) + head)
        self.conn.state = type(self.conn.state).BUSY  # the request went out by hand
        return recv_message(self.sock, self.conn, SECONDS)

    def close(self):
        self.sock.close()


# ------------------------------------------------------------------ 1. a child notices its client left


def test_child_notices_its_client_left_after_it_sent_bytes_during_a_long_wait(data_dir, server_factory):
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, 10)})
    server = server_factory(data_dir, "-m", "2")
    raw = Raw(server)
    assert isinstance(raw.call(Subscribe({"streams": ["NoSuchStream"]})), Ok)
    send_message(raw.sock, raw.conn, Next(300.0))
    time.sleep(0.3)
    raw.sock.sendall(b"\x00")  # a byte during the wait: the child used to stop watching the socket
    time.sleep(0.3)
    raw.close()
    wait_until(lambda: not alive(raw.pid), SECONDS, "the child's exit")
    assert "client left" in server.log
    # the slot is free again: two clients fit in -m 2
    with DDSClient(server.host, server.port) as a, DDSClient(server.host, server.port) as b:
        assert a.is_valid() and b.is_valid()


def test_tls_child_notices_a_close_notify_during_a_long_wait(data_dir, server_factory, certificate):
    cert, key = certificate
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, 10)})
    server = server_factory(data_dir, "--tls-cert", str(cert), "--tls-key", str(key))
    ctx = ssl.create_default_context(cafile=str(cert))
    tls = ctx.wrap_socket(socket.create_connection((server.host, server.port), timeout=SECONDS),
                          server_hostname="localhost")
    from dispatcher.tlsstream import TLSStream

    raw = Raw(server, TLSStream(tls))
    assert isinstance(raw.call(Subscribe({"streams": ["NoSuchStream"]})), Ok)
    send_message(raw.sock, raw.conn, Next(300.0))
    time.sleep(0.3)
    try:
        tls.unwrap()  # close_notify, as OpenSSL, Go and Java clients send when they close
    except (ssl.SSLError, OSError):
        pass  # the child answered the close_notify by closing: it noticed
    time.sleep(0.3)
    tls.close()
    wait_until(lambda: not alive(raw.pid), SECONDS, "the child's exit")
    assert "client left" in server.log


# ------------------------------------------------------------------ 3. an orphan never serves on


def test_orphan_blocked_writing_to_a_stalled_client_exits_at_once(data_dir, server_factory):
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, 400_000)})
    server = server_factory(data_dir, "--stall-timeout", "60")
    stalled, child = stalled_transfer(server, 400_000)
    try:
        time.sleep(0.5)  # the child is now blocked writing to a client that does not read
        assert alive(child)
        os.kill(server.pid, signal.SIGKILL)
        server.proc.wait(5)
        start = time.monotonic()
        wait_until(lambda: not alive(child), SECONDS, "the orphan's exit")
        assert time.monotonic() - start < 3  # not the 60 s stall limit
    finally:
        stalled.close()
    assert "parent server is gone" in server.log


# ------------------------------------------------------------------ 4. integer arithmetic never kills a child


@pytest.mark.parametrize("selection", [
    "(evt - 9223372036854775807 - 1) % -1 == 0",
    "(kind - 2147483647 - 1) % -1 == 0",
    "(-9223372036854775807 - 1) % -1 == 0",
    "(evt * 0 - 9223372036854775807 - 1) % (evt * 0 - 1) == 0",
    "(kind * 0 - 2147483647 - 1) % (kind * 0 - 1) == 0",
    "evt % 0 == 0 and kind % 0 == 0 and evt / 0 != 1",
    "(evt * 0 + 3) ** 99 > 0 and -(evt * 0 - 9223372036854775807 - 1) < 0",
])
def test_integer_edge_selection_is_served_and_the_child_lives(data_dir, server_factory, selection):
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, 20)})
    server = server_factory(data_dir)
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest", selection=selection))
        batch = c.next_batch(100, timeout=SECONDS)
        assert batch.entries.tolist() == list(range(20))  # numpy: each of these is true everywhere
    assert "killed by" not in server.log


# ------------------------------------------------------------------ 5. advance_by honours its timeout


def test_huge_advance_by_answers_within_its_timeout_and_skips_in_bulk(data_dir, server_factory):
    n = 200_000
    write_file(data_dir / FILE, {"DaqSnarl": {"evt": np.arange(n, dtype=np.int64)}}, steps=4)
    write_file(data_dir / "F00000001_0001.mdaq.root", {"DaqSnarl": {"evt": np.arange(n, n + 10, dtype=np.int64)}})
    server = server_factory(data_dir)
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        start = time.monotonic()
        rs = c.next(timeout=SECONDS, advance_by=n + 5)  # across the file boundary
        assert rs.file == "F00000001_0001.mdaq.root" and rs["DaqSnarl"]["evt"] == n + 4
        assert time.monotonic() - start < 3
        start = time.monotonic()
        with pytest.raises(DDSTimeout):
            c.next(timeout=0.5, advance_by=10**9)
        assert time.monotonic() - start < 3
        assert c.is_valid()


def test_huge_advance_by_with_sync_answers_within_its_timeout(data_dir, server_factory):
    n = 50_000
    evt = np.arange(n, dtype=np.int64)
    write_file(data_dir / FILE, {"A": {"evt": evt}, "B": {"evt": evt}})
    write_file(data_dir / "F00000001_0001.mdaq.root", {"A": {"evt": evt[:3]}, "B": {"evt": evt[:3]}})
    server = server_factory(data_dir)
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=["A", "B"], keep_up="all", start="oldest", sync="evt"))
        start = time.monotonic()
        with pytest.raises(DDSTimeout):
            c.next(timeout=0.5, advance_by=10**9)
        assert time.monotonic() - start < 3
        start = time.monotonic()
        batch = c.next_batch(100_000, timeout=0.5)  # built within its deadline too
        assert len(batch) >= 1 and time.monotonic() - start < 3


# ------------------------------------------------------------------ 6. NaN in a sync branch


def test_nan_sync_values_make_sets_of_their_own_and_never_stall(data_dir, server_factory):
    t = np.array([0.0, np.nan, 2.0, np.nan, 4.0])
    write_file(data_dir / FILE, {"A": {"t": t, "i": np.arange(5)}, "B": {"t": t, "i": np.arange(5)}})
    write_file(data_dir / "F00000001_0001.mdaq.root", {"A": {"t": t[:1], "i": np.arange(1)}})
    server = server_factory(data_dir)
    with DDSClient(server.host, server.port, prefetch=1) as c:
        c.subscribe(Subscription(streams=["A", "B"], keep_up="all", start="oldest", sync="t"))
        sets = [c.next(timeout=SECONDS) for _ in range(7)]
        assert [(sorted(rs.entries.items()), rs.missing) for rs in sets] == [
            ([("A", 0), ("B", 0)], ()), ([("A", 1)], ("B",)), ([("B", 1)], ("A",)),
            ([("A", 2), ("B", 2)], ()), ([("A", 3)], ("B",)), ([("B", 3)], ("A",)),
            ([("A", 4), ("B", 4)], ()),
        ]
        c.go_to_file(FILE)
        batch = c.next_batch(1000, timeout=SECONDS)
        assert len(batch) == 7
        assert batch.entries["A"].tolist() == [0, 1, -1, 2, 3, -1, 4]
        assert batch.entries["B"].tolist() == [0, -1, 1, 2, -1, 3, 4]


# ------------------------------------------------------------------ 7. replies within what the client accepts


def test_batch_of_huge_records_is_cut_to_fit_a_reply(data_dir, server_factory):
    n, width = 80, 1 << 17  # 80 records of 1 MiB: a batch of all would be 80 MiB
    with uproot.recreate(data_dir / FILE) as f:
        f.mktree("DaqSnarl", {"evt": np.int64, "blob": np.dtype((np.float64, (width,)))})
        for first in range(0, n, 10):
            f["DaqSnarl"].extend({"evt": np.arange(first, first + 10), "blob": np.zeros((10, width))})
    server = server_factory(data_dir)
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        got = []
        for _ in range(4):
            batch = c.next_batch(1100, timeout=SECONDS)
            assert 1 <= len(batch) <= 64
            got += batch.entries.tolist()
            if len(got) == n:
                break
        assert got == list(range(n))


# ------------------------------------------------------------------ 8, 9, 11. peer values: short, documented errors


def test_unencodable_and_out_of_range_values_get_their_documented_errors_in_one_log_line(data_dir, server_factory):
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, 10)})
    server = server_factory(data_dir, "-l", "Error")
    raw = Raw(server)
    mark = len(server.log)
    base = {"streams": ["DaqSnarl"], "keep_up": "all", "start": "oldest"}
    cases = [
        ({"type": "subscribe", "subscription": {**base, "prescale": 10**400}}, "BAD_SUBSCRIPTION"),
        ({"type": "subscribe", "subscription": {**base, "streams": ["\ud800"]}}, "BAD_SUBSCRIPTION"),
        ({"type": "subscribe", "subscription": {**base, "start": "\ud800.root"}}, "BAD_SUBSCRIPTION"),
        ({"type": "subscribe", "subscription": {**base, "selection": "evt > \ud800"}}, "BAD_SELECTION"),
        ({"type": "subscribe", "subscription": {**base, "branches": {"DaqSnarl": ["\udcff"]}}}, "BAD_SUBSCRIPTION"),
        ({"type": "subscribe", "subscription": {**base, "max_sync_delay": 10**400}}, "BAD_SUBSCRIPTION"),
        ({"type": "next", "timeout": 10**400}, "BAD_SUBSCRIPTION"),
        ({"type": "next", "timeout": 1, "advance_by": 10**400}, "BAD_SUBSCRIPTION"),
        ({"type": "go_to_file", "name": "\ud800"}, "NO_FILE"),
        ({"type": "go_to_file", "name": "x" * 5000}, "NO_FILE"),
        ({"type": "rewind", "file": FILE, "consumed": {"DaqSnarl": 10**400}}, "BAD_SUBSCRIPTION"),
    ]
    for _ in range(3):
        for header, code in cases:
            reply = raw.raw_call(header)
            assert isinstance(reply, Error) and reply.code.value == code, (header, reply)
            assert len(reply.message) < 400, reply.message
    # nothing was half-applied: there is still no subscription
    reply = raw.call(Next(1.0))
    assert isinstance(reply, Error) and "no subscription yet" in reply.message
    raw.close()
    new = server.log[mark:]
    assert "Traceback" not in new and "SERVER_ERROR" not in new
    assert len(new) < 2000  # at -l Error, peers' mistakes are not our errors


def test_huge_protocol_version_is_quoted_short_in_the_reply_and_the_log(data_dir, server_factory):
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, 10)})
    server = server_factory(data_dir)
    sock = socket.create_connection((server.host, server.port), timeout=SECONDS)
    with sock:
        head = ('{"type":"hello","protocol":' + "9" * 4000 + "}").encode()
        sock.sendall(PREFIX.pack(len(head), 0) + head)
        conn = Connection("client")
        conn.state = type(conn.state).HELLO_SENT
        reply = recv_message(sock, conn, SECONDS)
    assert isinstance(reply, Error) and reply.code is MessageType.PROTOCOL_ERROR
    assert len(reply.message) < 200, reply.message
    wait_until(lambda: "speaks protocol" in server.log, SECONDS, "the log line")
    line = next(x for x in server.log.splitlines() if "speaks protocol" in x)
    assert len(line) < 300, line


def test_repeated_bug_tracebacks_are_rate_limited():
    import logging

    from dispatcher import logsetup

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    log = logging.getLogger("dds.test_bug")
    log.addHandler(Keep())
    log.propagate = False
    logsetup._last_traceback[0] = float("-inf")
    for i in range(50):
        try:
            raise RuntimeError(f"bug {i}")
        except RuntimeError:
            logsetup.bug(log, "error serving %s", "next")
    assert len(records) == 50
    assert sum(r.exc_info is not None for r in records) == 1
    assert "bug 49" in records[-1].getMessage() and records[-1].exc_info is None


# ------------------------------------------------------------------ 12. the client survives its own arguments


def test_client_refuses_bad_arguments_before_sending_and_stays_usable(data_dir, server_factory):
    write_file(data_dir / FILE, {"DaqSnarl": snarl_data(0, 10)})
    server = server_factory(data_dir)
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        calls = [
            lambda: c.next(timeout=float("inf")), lambda: c.next(timeout=float("nan")),
            lambda: c.next(timeout=-1), lambda: c.next(timeout="5"), lambda: c.next(timeout=None),
            lambda: c.next(advance_by=0), lambda: c.next(advance_by=1.5), lambda: c.next(advance_by=10**10),
            lambda: c.next(advance_by=float("inf")), lambda: c.next(advance_by=True),
            lambda: c.next_batch(max_records=float("nan")), lambda: c.next_batch(max_records=0),
            lambda: c.next_batch(timeout=1e400), lambda: c.go_to_next_file(timeout=float("inf")),
        ]
        for call in calls:
            with pytest.raises(DDSError) as err:
                call()
            assert err.value.message_type is MessageType.BAD_SUBSCRIPTION
            assert c.is_valid()
        for name in (None, b"x.root", 7):
            with pytest.raises(DDSError) as err:
                c.go_to_file(name)
            assert err.value.message_type is MessageType.NO_FILE
        assert c.next(timeout=SECONDS)["DaqSnarl"]["evt"] == 0


# ------------------------------------------------------------------ anonymous peers learn nothing


def test_anonymous_peer_of_a_token_server_learns_neither_host_nor_pid(data_dir, server_factory, tmp_path):
    token = tmp_path / "dds.token"
    token.write_text("s3cret-Token-0123456789\n")
    token.chmod(0o600)
    server = server_factory(data_dir, "--token-file", str(token))
    replies = []
    for hello in ({"type": "hello", "protocol": 1}, {"type": "hello", "protocol": 1, "role": "admin"},
                  {"type": "hello", "protocol": 2}):
        with socket.create_connection((server.host, server.port), timeout=SECONDS) as sock:
            head = json.dumps(hello).encode()
            sock.sendall(PREFIX.pack(len(head), 0) + head)
            conn = Connection("client")
            conn.state = type(conn.state).HELLO_SENT
            replies.append(recv_message(sock, conn, SECONDS))
    for reply in replies:
        assert isinstance(reply, Error), reply
        assert socket.gethostname() not in reply.message and str(server.pid) not in reply.message
