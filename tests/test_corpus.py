"""Real ROOT files from other projects, served exactly as uproot reads them.

A representative subset of the corpus ships in ``tests/data/corpus``; ``make compat``
runs the same comparison over every file of the full corpus (``tests/corpus.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clients import DDSClient, DDSError, MessageType, Subscription
from corpus import run

SUBSET = Path(__file__).resolve().parent / "data" / "corpus"
FILES = sorted(p.name for p in SUBSET.glob("*.root"))


def test_the_subset_is_there():
    assert len(FILES) >= 15


@pytest.mark.parametrize("name", FILES)
def test_every_stream_is_served_exactly_as_uproot_reads_it(name):
    outcomes = run([str(SUBSET / name)], timeout=60.0)
    assert outcomes, f"no stream found in {name}"
    wrong = [(o.stream, o.status, o.detail) for o in outcomes if o.status != "exact"]
    assert not wrong, wrong
    # what uproot cannot read is the only thing left out, and each such branch has a reason
    for o in outcomes:
        assert o.served == o.readable
        assert all(reason for reason in o.excluded.values())


def test_a_branch_uproot_cannot_read_is_logged_reported_and_refused_by_name(data_dir, server):
    shutil.copy(SUBSET / "uproot-issue-1229.root", data_dir / "F00000001_0001.root")
    with DDSClient(server.host, server.port) as c:
        reply = c.subscribe(Subscription(streams=("tree",), keep_up="all", start="oldest"))
        assert "pointer" in reply["unserved"]["tree"]
        assert "arbitrary pointer" in reply["unserved"]["tree"]["pointer"]
        b = c.next_batch(timeout=10)
        assert "pointer" not in b.arrays.fields and b.arrays.fields
        assert b.unserved["tree"] == reply["unserved"]["tree"]
        c.go_to_file("F00000001_0001.root")
        rs = c.next(timeout=10)
        assert rs.unserved == reply["unserved"] and set(rs["tree"]) == {"fUniqueID", "fBits"}
        with pytest.raises(DDSError) as info:
            c.subscribe(Subscription(streams=("tree",), branches={"tree": ["pointer"]}))
        assert info.value.message_type == MessageType.BAD_SUBSCRIPTION
        assert "branch 'pointer' of stream tree cannot be served" in str(info.value)
        with pytest.raises(DDSError) as info:
            c.subscribe(Subscription(streams=("tree",), selection="pointer > 0"))
        assert info.value.message_type == MessageType.BAD_SELECTION
        assert "cannot be served" in str(info.value)
    log = server.log
    assert "F00000001_0001.root, stream tree: branch pointer is not served" in log
    assert log.count("branch pointer is not served") == 1  # once per file, not per read or client request


@pytest.mark.parametrize("name, stream", [("uproot-small-evnt-tree-fullsplit.root", "tree"),
                                          ("uproot-HZZ-zlib.root", "events")])
def test_iterate_with_numpy_gives_what_uproot_iterate_gives(data_dir, server, name, stream):
    import numpy as np
    import uproot

    import clients

    shutil.copy(SUBSET / name, data_dir / "F00000001_0001.root")
    steps = list(clients.iterate(f"{server.host}:{server.port}", [stream], step_size=40, timeout=1.0, library="np"))
    path = str(data_dir / "F00000001_0001.root")
    expected = list(uproot.iterate(f"{path}:{stream}", step_size=40, library="np"))
    assert len(steps) == len(expected)
    for got, want in zip(steps, expected):
        assert sorted(got) == sorted(want)
        for key, column in want.items():
            assert got[key].dtype == column.dtype and got[key].shape == column.shape, key
            for a, b in zip(got[key], column):
                assert (a == b) if isinstance(b, str) else np.array_equal(np.asarray(a), np.asarray(b)), key
