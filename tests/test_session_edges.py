"""Edge paths of one session, served end to end: empty branch lists, odd requests, unreadable files."""

from __future__ import annotations

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
