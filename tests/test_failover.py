"""Several servers for one client: the list tried in order, and resuming where the client was."""

from __future__ import annotations

import socket

import numpy as np
import pytest

import clients
from clients import DDSClient, DDSConnectionError, DDSError, MessageType, Subscription
from clients.failover import Position, server_list, server_text
from clients.job import Job, Module
from clients.records import RecordBatch, RecordSet
from conftest import Server, snarl_data, write_file

N = 400  # entries per file


def dead_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def three_files(data_dir):
    for i in range(3):
        write_file(data_dir / f"F0001_{i:04d}.root", {"DaqSnarl": snarl_data(i * N, N)}, steps=4)
    return data_dir


def everything() -> list[int]:
    return list(range(3 * N))


def sub_all() -> Subscription:
    return Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest")


# ----------------------------------------------------------------------------- the list


@pytest.mark.parametrize("given, want", [
    (["hostA:9090", "hostB:9091"], [("hostA", 9090), ("hostB", 9091)]),
    ("hostA:9090, hostB:9091", [("hostA", 9090), ("hostB", 9091)]),
    ("hostA", [("hostA", 7000)]),
    (("hostA", 9092), [("hostA", 9092)]),
    (["[::1]:9093", "::1"], [("::1", 9093), ("::1", 7000)]),
])
def test_a_server_list_is_host_colon_port_entries_in_order(given, want):
    assert server_list(given, 7000) == want


def test_a_server_list_reads_back_from_its_text():
    servers = [("hostA", 9090), ("::1", 9091)]
    assert server_list(server_text(servers)) == servers


@pytest.mark.parametrize("bad", ["", ",", ["hostA:port"], [9090]])
def test_a_bad_server_list_is_refused(bad):
    with pytest.raises(ValueError):
        server_list(bad)


def test_the_first_server_that_accepts_is_kept_and_an_unreachable_one_skipped(three_files, server_factory):
    s = server_factory(three_files)
    with DDSClient([f"127.0.0.1:{dead_port()}", f"127.0.0.1:{s.port}"]) as dds:
        assert dds.port == s.port
        dds.subscribe(sub_all())
        assert dds.next(timeout=10)["DaqSnarl"]["evt"] == 0


def test_a_full_server_is_skipped_and_two_clients_with_one_list_are_both_served(three_files, server_factory):
    a = server_factory(three_files, "-m", "1")
    b = server_factory(three_files, "-m", "1")
    servers = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
    with DDSClient(servers) as first, DDSClient(",".join(servers)) as second:
        assert (first.port, second.port) == (a.port, b.port)
        for dds in (first, second):
            dds.subscribe(sub_all())
            assert dds.next_batch(1000, timeout=10).entries[0] == 0
        with pytest.raises(DDSError) as busy:  # none accepts: the last error
            DDSClient(servers)
        assert busy.value.message_type is MessageType.SERVER_BUSY


def test_with_no_server_reachable_the_last_error_names_the_last_address():
    ports = [dead_port(), dead_port()]
    with pytest.raises(DDSConnectionError, match=f"127.0.0.1:{ports[1]}"):
        DDSClient([f"127.0.0.1:{p}" for p in ports], connect_timeout=2)


def test_iterate_and_jobs_take_a_comma_separated_list(three_files, server_factory):
    s = server_factory(three_files)
    servers = f"127.0.0.1:{dead_port()},127.0.0.1:{s.port}"
    got = [int(e) for arrays in clients.iterate(servers, "DaqSnarl", ["evt"], timeout=1) for e in arrays.evt]
    assert got == everything()

    seen = []

    class Note(Module):
        def process(self, rs):
            seen.append(rs["DaqSnarl"]["evt"])

    job = Job(f"DDSServer={servers}", "DDSKeepUpMode=All", "DDSStart=oldest", "DDSTimeOut=1")
    job.path("Main").mod(Note)
    job.path("Main").run(max_records=10)
    assert seen == list(range(10))
    assert Job(server=[f"127.0.0.1:{s.port}", "hostB:9091"]).input.settings["server"] == \
        f"127.0.0.1:{s.port},hostB:9091"


# ----------------------------------------------------------------------------- resuming


def test_resume_continues_on_the_next_server_with_every_record_once(three_files, server_factory):
    a = server_factory(three_files)
    b = server_factory(three_files)
    with DDSClient([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"], resume=True, connect_timeout=5) as dds:
        dds.subscribe(sub_all())
        got = [dds.next(timeout=10)["DaqSnarl"]["evt"] for _ in range(N + 50)]  # into the second file
        a.stop()
        while len(got) < 3 * N:
            got.append(dds.next(timeout=10)["DaqSnarl"]["evt"])
        assert dds.port == b.port
    assert got == everything()


def test_resume_survives_a_server_restart_on_the_same_port_with_batches(three_files, server_factory, tmp_path):
    a = server_factory(three_files)
    port = a.port
    with DDSClient("127.0.0.1", port, resume=True, connect_timeout=15) as dds:
        dds.subscribe(sub_all())
        got = [int(e) for e in dds.next_batch(150, timeout=10).arrays.evt]
        a.stop()
        server_factory(three_files, "-p", str(port))  # the same port again
        while len(got) < 3 * N:
            got.extend(int(e) for e in dds.next_batch(150, timeout=10).arrays.evt)
    assert got == everything()


def test_without_resume_a_lost_server_is_an_error(three_files, server_factory):
    a = server_factory(three_files)
    b = server_factory(three_files)
    with DDSClient([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]) as dds:
        dds.subscribe(sub_all())
        dds.next(timeout=10)
        a.stop()
        with pytest.raises(DDSError) as lost:
            for _ in range(3 * N):
                dds.next(timeout=10)
        assert lost.value.message_type in (MessageType.SHUTDOWN, MessageType.SERVER_ERROR)
        assert not dds.is_valid()


def test_resume_gives_up_after_connect_timeout_with_a_clear_error(three_files):
    a = Server(three_files)
    try:
        with DDSClient("127.0.0.1", a.port, resume=True, connect_timeout=1) as dds:
            dds.subscribe(sub_all())
            dds.next(timeout=10)
            a.stop()
            with pytest.raises(DDSConnectionError, match="could not resume within 1 s"):
                for _ in range(3 * N):
                    dds.next(timeout=10)
    finally:
        a.stop()


def test_position_drops_what_was_handed_out_and_restarts_at_the_earliest_file():
    pos = Position()
    pos.note_set(RecordSet("F2.root", {"A": {}}, {"A": 5}))
    pos.note_batch(RecordBatch("B", "F1.root", np.array([7, 8, 9]), None))
    assert pos.restart_file() == "F1.root"
    assert pos.seen_set(RecordSet("F2.root", {"A": {}}, {"A": 5}))
    assert not pos.seen_set(RecordSet("F2.root", {"A": {}}, {"A": 6}))
    assert pos.seen_set(RecordSet("F1.root", {"A": {}}, {"A": 900}))
    import awkward as ak

    batch = RecordBatch("B", "F1.root", np.array([8, 9, 10, 11]), ak.Array([{"x": i} for i in (8, 9, 10, 11)]))
    fresh = pos.fresh_batch(batch)
    assert fresh is not None and list(fresh.entries) == [10, 11] and fresh.arrays.x.tolist() == [10, 11]
    assert pos.fresh_batch(RecordBatch("B", "F0.root", np.array([50]), ak.Array([{"x": 1}]))) is None
    pos.clear("F0.root")  # go_to_file: repeats are wanted
    assert pos.restart_file() == "F0.root" and pos.fresh_batch(batch) is batch
