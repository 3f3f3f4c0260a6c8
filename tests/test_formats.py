"""Every kind of ROOT data, served as uproot reads it: growing trees with strings, vectors and
fixed-size arrays inside a directory, growing RNTuples, an RNTuple that appears only when it is
committed, and selections over each kind, through a real server."""

from __future__ import annotations

import os
import threading
import time

import awkward as ak
import numpy as np
import pytest
import uproot

from clients import DDSClient, DDSError, MessageType, Subscription
from corpus import same_array

STEPS = 12
PER_STEP = 7


def rows(i: int, n: int = PER_STEP) -> dict:
    """Step i of an event stream with one branch of every kind uproot's writer writes."""
    first = i * n
    evt = np.arange(first, first + n, dtype=np.int64)
    rng = np.random.default_rng(first)
    counts = rng.integers(0, 4, n)
    return {
        "evt": evt,
        "pt": ak.unflatten(rng.exponential(20.0, int(counts.sum())).astype(np.float32), counts),
        "name": ak.Array([["muon", "electron", "tau"][k % 3] + ("" if k % 5 else "*") for k in evt.tolist()]),
        "xyz": rng.normal(0.0, 1.0, (n, 3)),
        "ok": (evt % 4) != 0,
    }


TYPES = {"evt": np.int64, "pt": "var * float32", "name": "string", "xyz": ("f8", (3,)), "ok": np.bool_}


def drain(client: DDSClient, want: int, seconds: float = 30.0) -> ak.Array:
    got, n = [], 0
    deadline = time.monotonic() + seconds
    while n < want and time.monotonic() < deadline:
        b = client.next_batch(max_records=1000, timeout=max(0.1, deadline - time.monotonic()))
        got.append(b.arrays)
        n += len(b)
    assert n == want, f"received {n} of {want} records"
    return ak.concatenate(got) if len(got) > 1 else got[0]


def assert_same(served: ak.Array, expected: ak.Array) -> None:
    assert sorted(served.fields) == sorted(expected.fields)
    for f in expected.fields:
        assert same_array(served[f], expected[f]), f


def grow_tree(path, started: threading.Event) -> None:
    with uproot.recreate(str(path)) as f:
        tree = f.mktree("det/events", TYPES)
        for i in range(STEPS):
            tree.extend(rows(i))
            started.set()
            time.sleep(0.03)


def test_growing_tree_in_a_directory_with_strings_vectors_and_fixed_arrays_is_served_exactly(data_dir, server):
    path = data_dir / "F00000001_0001.root"
    started = threading.Event()
    writer = threading.Thread(target=grow_tree, args=(path, started))
    writer.start()
    try:
        assert started.wait(10)
        with DDSClient(server.host, server.port) as c:
            c.subscribe(Subscription(streams=("det/events",), keep_up="all", start="oldest"))
            served = drain(c, STEPS * PER_STEP)
    finally:
        writer.join(30)
    expected = uproot.open(path)["det/events"].arrays(library="ak")
    assert_same(served, expected)
    assert served["name"][1] == "electron" and len(served["xyz"][0]) == 3


def test_selection_over_strings_elements_and_fixed_arrays_runs_on_the_server(data_dir, server):
    with uproot.recreate(str(data_dir / "F00000001_0001.root")) as f:
        f.mktree("det/events", TYPES).extend(rows(0, 200))
    cut = "name == 'muon' && pt[0] > 10 && sum(xyz) > -1 && ok"
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=("det/events",), keep_up="all", start="oldest", selection=cut))
        data = uproot.open(data_dir / "F00000001_0001.root")["det/events"].arrays()
        first = ak.fill_none(ak.firsts(data.pt), np.nan)
        expected = np.flatnonzero(
            (np.asarray(data.name == "muon")) & (np.asarray(first) > 10)
            & (np.asarray(data.xyz).sum(axis=1) > -1) & np.asarray(data.ok)
        )
        assert 0 < len(expected) < 200
        b = c.next_batch(max_records=1000, timeout=10)
        assert b.entries.tolist() == expected.tolist()
        assert ak.all(b.arrays.name == "muon")


@pytest.mark.parametrize(
    "cut, fragment",
    [
        ("name > 'a'", "compared with == or != only"),
        ("xyz > 0", "fixed-size array"),
        ("pt[-1] > 0", "negative indices"),
    ],
)
def test_selection_a_kind_cannot_take_is_refused_at_subscribe(data_dir, server, cut, fragment):
    with uproot.recreate(str(data_dir / "F00000001_0001.root")) as f:
        f.mktree("det/events", TYPES).extend(rows(0))
    with DDSClient(server.host, server.port) as c:
        with pytest.raises(DDSError) as info:
            c.subscribe(Subscription(streams=("det/events",), selection=cut))
        assert info.value.message_type == MessageType.BAD_SELECTION
        assert fragment in str(info.value)


def ntuple_rows(i: int, n: int = PER_STEP) -> dict:
    r = rows(i, n)
    return {"evt": r["evt"], "pt": r["pt"], "name": r["name"]}


def test_growing_rntuple_is_served_exactly(data_dir, server):
    path = data_dir / "F00000001_0001.root"
    f = uproot.recreate(str(path))
    try:
        f["ntuple"] = ntuple_rows(0)
        nt = f["ntuple"]
        with DDSClient(server.host, server.port) as c:
            c.subscribe(Subscription(streams=("ntuple",), keep_up="all", start="oldest"))
            first = drain(c, PER_STEP)
            for i in range(1, STEPS):
                nt.extend(ntuple_rows(i))
            rest = drain(c, (STEPS - 1) * PER_STEP)
    finally:
        f.close()
    expected = uproot.open(path)["ntuple"].arrays(library="ak")
    assert_same(ak.concatenate([first, rest]), expected)


def test_rntuple_that_appears_only_when_committed_is_waited_for(data_dir, server):
    path = data_dir / "F00000001_0001.root"
    uproot.recreate(str(path)).close()  # the DAQ's file, its RNTuple not committed yet
    staging = data_dir.parent / "staging.root"
    with uproot.recreate(str(staging)) as f:
        f["ntuple"] = ntuple_rows(0, 50)
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=("ntuple",), keep_up="all", start="oldest"))
        with pytest.raises(DDSError) as info:
            c.next_batch(timeout=0.3)
        assert info.value.message_type == MessageType.TIMEOUT
        os.replace(staging, path)  # the commit: the anchor and the data appear at once
        served = drain(c, 50)
    assert served.evt.tolist() == list(range(50))
    assert "Traceback" not in server.log


def test_a_writer_mid_extend_never_costs_a_branch(data_dir, server):
    """Many small appends read while they happen: a torn moment is retried, never taken for a
    branch uproot cannot read (which would drop it for the rest of the file)."""
    path = data_dir / "F00000001_0001.root"
    appends = 300
    started = threading.Event()

    def write() -> None:
        with uproot.recreate(str(path)) as f:
            tree = f.mktree("events", {"evt": np.int64, "stamp": np.float64, "pt": "var * float32"},
                            initial_basket_capacity=appends + 10)
            for i in range(appends):
                tree.extend({"evt": np.array([i]), "stamp": np.array([i * 0.5]),
                             "pt": ak.Array([[float(i)] * (i % 3)])})
                started.set()
                time.sleep(0.002)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert started.wait(10)
        with DDSClient(server.host, server.port) as c:
            c.subscribe(Subscription(streams=("events",), keep_up="all", start="oldest"))
            got, n = [], 0
            deadline = time.monotonic() + 60
            while n < appends and time.monotonic() < deadline:
                b = c.next_batch(max_records=50, timeout=10)
                assert b.unserved == {} and sorted(b.arrays.fields) == ["evt", "npt", "pt", "stamp"]
                got.append(b.arrays)
                n += len(b)
    finally:
        writer.join(60)
    served = ak.concatenate(got)
    assert served.evt.tolist() == list(range(appends))
    assert served.stamp.tolist() == [i * 0.5 for i in range(appends)]
    assert "is not served" not in server.log
