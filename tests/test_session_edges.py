"""Edge paths of one session, served end to end: empty branch lists, odd requests, unreadable files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import snarl_data, write_file

from clients import DDSClient, Subscription


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
