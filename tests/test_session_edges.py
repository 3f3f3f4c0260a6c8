"""Edge paths of one session, served end to end: empty branch lists, odd requests, unreadable files."""

from __future__ import annotations

import os

import numpy as np
import pytest

from clients import DDSClient, DDSError, MessageType, Subscription
from conftest import snarl_data, write_file
from dispatcher.protocol import Rewind


@pytest.mark.parametrize("selection", [None, "nhits > 30", "1"])
def test_an_empty_branch_list_serves_entries_without_fields(server_factory, data_dir, selection):
    d = snarl_data(0, 300)
    write_file(data_dir / "F00000001_0000.mdaq.root", {"DaqSnarl": d}, steps=3)
    server = server_factory(data_dir)
    passing = np.arange(300) if selection in (None, "1") else np.flatnonzero(d["nhits"] > 30)
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest",
                                 branches={"DaqSnarl": []}, selection=selection))
        batch = c.next_batch(20, timeout=5)
        rs = c.next(timeout=5)
    assert batch.entries.tolist() == passing[:20].tolist()
    assert batch.arrays.to_list() == [{}] * 20
    assert rs.entries == {"DaqSnarl": int(passing[20])}
    assert rs["DaqSnarl"] == {}


def _deleted_files_held(pid: int) -> list[str]:
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith(" (deleted)"):
            held.append(target)
    return held


def test_a_deleted_file_is_closed_once_the_session_moves_past_it(server_factory, data_dir):
    write_file(data_dir / "F00000001_0000.mdaq.root", {"DaqSnarl": snarl_data(0, 300)}, steps=3)
    write_file(data_dir / "F00000001_0001.mdaq.root", {"DaqSnarl": snarl_data(300, 300)}, steps=3)
    server = server_factory(data_dir)
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        assert c.next_batch(10, timeout=5).file == "F00000001_0000.mdaq.root"
        (data_dir / "F00000001_0000.mdaq.root").unlink()
        files = set()
        for _ in range(100):
            b = c.next_batch(1000, timeout=5)
            files.add(b.file)
            if b.file == "F00000001_0001.mdaq.root":
                break
        assert "F00000001_0001.mdaq.root" in files
        (child,) = server.children()
        assert _deleted_files_held(child) == []


def _two_streams(first: int, n_a: int, n_b: int) -> dict:
    return {"A": {"evt": np.arange(first, first + n_a, dtype=np.int64)},
            "B": {"evt": np.arange(first, first + n_b, dtype=np.int64)}}


@pytest.mark.parametrize("batch", [False, True])
def test_sync_reads_a_just_closed_file_to_its_end_before_calling_a_stream_missing(server_factory, data_dir, batch):
    first = data_dir / "F00000001_0000.mdaq.root"
    write_file(first, _two_streams(0, 10, 9))  # B's evt 9 is not written yet
    server = server_factory(data_dir)
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=["A", "B"], keep_up="all", start="oldest", sync="evt", max_sync_delay=30))
        for v in range(8):
            rs = c.next(timeout=5)
            assert rs.entries == {"A": v, "B": v} and rs.missing == ()
        # the DAQ writes B's evt 9 and, right after, the next file: the first file is now closed
        write_file(data_dir / "F00000001_0000.mdaq.tmp", _two_streams(0, 10, 10))
        os.replace(data_dir / "F00000001_0000.mdaq.tmp", first)
        write_file(data_dir / "F00000001_0001.mdaq.root", _two_streams(10, 5, 5))
        if batch:
            b = c.next_batch(100, timeout=5)
            assert b.entries["A"].tolist() == [8, 9] and b.entries["B"].tolist() == [8, 9]
        else:
            for v in (8, 9):
                rs = c.next(timeout=5)
                assert rs.entries == {"A": v, "B": v} and rs.missing == ()
        rs = c.next(timeout=5)
        assert rs.file == "F00000001_0001.mdaq.root" and rs.entries == {"A": 0, "B": 0}


@pytest.mark.parametrize("consumed", [-1, -1000, "3", True])
def test_a_rewind_with_a_nonsense_count_is_refused_and_gives_nothing_back(server_factory, data_dir, consumed):
    write_file(data_dir / "F00000001_0000.mdaq.root", {"DaqSnarl": snarl_data(0, 1000)}, steps=3)
    server = server_factory(data_dir)
    # window=0: next() asks for each reply and gives unused sets back with rewind (no stream of sets)
    with DDSClient(server.host, server.port, prefetch=100, window=0) as c:
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        assert c.next(timeout=5).entries == {"DaqSnarl": 0}  # the first reply: a short one (entries 0..k-1)
        sent = 1 + len(c._ahead)
        assert 1 < sent <= 100
        c._ahead.clear()
        with pytest.raises(DDSError) as err:
            c._call(Rewind("F00000001_0000.mdaq.root", {"DaqSnarl": consumed}), 5)
        assert err.value.message_type is MessageType.BAD_SUBSCRIPTION
        assert c.next(timeout=5).entries == {"DaqSnarl": sent}  # nothing was given back
        assert c.is_valid()
