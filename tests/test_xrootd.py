"""A data directory on a real XRootD server on loopback: the same guarantees as a local one."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import uproot

from clients import DDSClient, DDSError, DDSTimeout, MessageType, Subscription
from conftest import snarl_data, write_file
from dispatcher.testing import XRootDProc

N = 300


@pytest.fixture
def xrootd():
    x = XRootDProc()
    yield x
    x.close()


def serve(server_factory, xrootd: XRootDProc, *args: str):
    """A ddsparentserver reading the XRootD export, logging next to it (removed with it)."""
    return server_factory(xrootd.url, *args, log_file=xrootd.base / f"dds-{time.monotonic_ns()}.log")


def sub_all(**kw) -> Subscription:
    return Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest", **kw)


def drain(dds: DDSClient, timeout: float = 1.0) -> list[tuple[str, int]]:
    got = []
    while True:
        try:
            b = dds.next_batch(10000, timeout=timeout)
        except DDSTimeout:
            return got
        got.extend((b.file, int(e)) for e in b.arrays.evt)


def test_closed_files_are_served_exactly_as_uproot_reads_them(xrootd, server_factory):
    for i in range(3):
        write_file(xrootd.export / f"F0001_{i:04d}.root", {"DaqSnarl": snarl_data(i * N, N)}, steps=3)
    (xrootd.export / "notes.txt").write_text("not data")
    s = serve(server_factory, xrootd)
    with DDSClient(s.host, s.port) as dds:
        dds.subscribe(sub_all())
        batches = []
        while sum(len(b) for b in batches) < 3 * N:
            batches.append(dds.next_batch(10000, timeout=10))
        for name in ("../x.root", "/etc/passwd", "notes.txt", "F0001_0000.root/.."):
            with pytest.raises(DDSError) as bad:
                dds.go_to_file(name)
            assert bad.value.message_type is MessageType.NO_FILE
    for i, b in enumerate(batches[:3]):
        local = uproot.open(xrootd.export / f"F0001_{i:04d}.root")["DaqSnarl"].arrays(library="ak")
        assert b.file == f"F0001_{i:04d}.root" and b.arrays.to_list() == local.to_list()


def test_a_live_writer_with_rotation_is_read_once_in_all_mode(xrootd, server_factory):
    write_file(xrootd.export / "F0001_0000.root", {"DaqSnarl": snarl_data(0, 50)})
    s = serve(server_factory, xrootd)
    done = threading.Event()

    def daq():
        try:
            for i in range(1, 4):  # each file grows in 5 steps; a new file closes the previous one
                data = snarl_data(i * N, N)
                with uproot.recreate(str(xrootd.export / f"F0001_{i:04d}.root")) as f:
                    tree = f.mktree("DaqSnarl", {k: v.dtype for k, v in data.items()})
                    for a in range(0, N, N // 5):
                        tree.extend({k: v[a:a + N // 5] for k, v in data.items()})
                        time.sleep(0.1)
        finally:
            done.set()

    with DDSClient(s.host, s.port) as dds:
        dds.subscribe(sub_all())
        writer = threading.Thread(target=daq)
        writer.start()
        got: list[tuple[str, int]] = []
        deadline = time.monotonic() + 30
        while not (done.is_set() and len(got) >= 50 + 3 * N) and time.monotonic() < deadline:
            got.extend(drain(dds, 0.5))
        writer.join(10)
    want = [("F0001_0000.root", e) for e in range(50)]
    want += [(f"F0001_{i:04d}.root", e) for i in range(1, 4) for e in range(i * N, (i + 1) * N)]
    assert got == want


def test_a_file_deleted_mid_read_is_skipped_and_the_next_one_served(xrootd, server_factory):
    for i in range(3):
        write_file(xrootd.export / f"F0001_{i:04d}.root", {"DaqSnarl": snarl_data(i * N, N)}, steps=3)
    s = serve(server_factory, xrootd)
    with DDSClient(s.host, s.port, prefetch=1) as dds:
        dds.subscribe(sub_all())
        first = dds.next(timeout=10)
        assert first.file == "F0001_0000.root"
        (xrootd.export / "F0001_0001.root").unlink()
        rest = drain(dds)
    files = {f for f, _ in rest}
    assert "F0001_0002.root" in files and [e for f, e in rest if f == "F0001_0002.root"] == list(range(2 * N, 3 * N))


def test_xrootd_stopped_and_restarted_while_a_client_waits(xrootd, server_factory):
    write_file(xrootd.export / "F0001_0000.root", {"DaqSnarl": snarl_data(0, N)})
    s = serve(server_factory, xrootd)
    with DDSClient(s.host, s.port) as dds:
        dds.subscribe(sub_all())
        assert len(drain(dds, 0.5)) == N
        xrootd.stop()
        with pytest.raises(DDSTimeout):  # nothing while it is away: a clear timeout, the session goes on
            dds.next_batch(100, timeout=1.0)
        write_file(xrootd.export / "F0001_0001.root", {"DaqSnarl": snarl_data(N, N)})
        xrootd.start()
        got = []
        deadline = time.monotonic() + 20
        while len(got) < N and time.monotonic() < deadline:
            got.extend(drain(dds, 1.0))
        assert got == [("F0001_0001.root", e) for e in range(N, 2 * N)]
    assert s.proc.poll() is None  # the DDS server kept running


def test_two_dds_servers_on_one_origin_serve_two_clients_with_one_list(xrootd, server_factory):
    write_file(xrootd.export / "F0001_0000.root", {"DaqSnarl": snarl_data(0, N)})
    a = serve(server_factory, xrootd, "-m", "1")
    b = serve(server_factory, xrootd, "-m", "1")
    servers = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
    with DDSClient(servers) as one, DDSClient(servers) as two:
        assert {one.port, two.port} == {a.port, b.port}
        for dds in (one, two):
            dds.subscribe(sub_all())
            assert [e for _, e in drain(dds, 0.5)] == list(np.arange(N))
