"""Subscriptions served end to end: selections, branches, prescale, resubscribe, event building."""

from __future__ import annotations

import threading
import time

import awkward as ak
import numpy as np
import pytest
import uproot

from clients import DDSClient, DDSError, DDSTimeout, MessageType, Subscription
from conftest import snarl_data, write_file

N = 3000


def drain(client, max_records=1000, timeout=1.0, limit=100):
    """All batches until the first timeout: (entries per file, concatenated arrays)."""
    files, arrays = [], []
    for _ in range(limit):
        try:
            b = client.next_batch(max_records, timeout=timeout)
        except DDSTimeout:
            break
        files.extend([b.file] * len(b))
        arrays.append(b.arrays)
    return files, (ak.concatenate(arrays) if arrays else ak.Array([]))


@pytest.fixture
def two_files(data_dir):
    a, b = snarl_data(0, N, seed=1), snarl_data(N, N, seed=2)
    write_file(data_dir / "F00000001_0000.mdaq.root", {"DaqSnarl": a}, steps=3)
    write_file(data_dir / "F00000001_0001.mdaq.root", {"DaqSnarl": b}, steps=3)
    both = {k: np.concatenate([a[k], b[k]]) for k in a}
    return both


def client_for(server, **sub):
    c = DDSClient(server.host, server.port)
    c.subscribe(Subscription(**{"streams": ["DaqSnarl"], "keep_up": "all", "start": "oldest", **sub}))
    return c


@pytest.mark.parametrize(
    "text",
    [
        "evt % 7 == 0 && kind != 2",
        "evt % 7 == 0 and kind != 2",
        "(evt % 7 == 0) & (kind != 2)",
        "!(evt % 7 != 0 || kind == 2)",
        "not (evt % 7 != 0 or kind == 2)",
        "~((evt % 7 != 0) | (kind == 2))",
    ],
)
def test_each_operator_style_selects_exactly_the_numpy_truth(server, two_files, text):
    d = two_files
    truth = d["evt"][(d["evt"] % 7 == 0) & (d["kind"] != 2)]
    with client_for(server, selection=text) as c:
        _, got = drain(c)
    assert got["evt"].to_list() == truth.tolist()


def test_functions_and_floats_select_like_numpy(server, two_files):
    d = two_files
    text = "sqrt(energy) > 3.5 && abs(log10(energy + 1) - 1) < 0.25 || where(ok, nhits, 0) > 40"
    e = d["energy"]
    truth = d["evt"][((np.sqrt(e) > 3.5) & (np.abs(np.log10(e + 1) - 1) < 0.25))
                     | (np.where(d["ok"], d["nhits"], 0) > 40)]
    with client_for(server, selection=text) as c:
        _, got = drain(c)
    assert got["evt"].to_list() == truth.tolist()


def test_next_applies_the_selection_record_by_record(server, two_files):
    d = two_files
    truth = d["evt"][d["kind"] == 3][:50]
    with client_for(server, selection="kind == 3") as c:
        got = [c.next(timeout=2)["DaqSnarl"]["evt"] for _ in range(50)]
    assert got == truth.tolist()


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('touch {marker}')",
        "evt.__class__",
        "__builtins__",
        "(lambda: 1)()",
        "[x for x in evt]",
        "evt[0] > 1",
        "open('{marker}', 'w')",
        "nhit > 3",
        "evt > ",
        "(" * 500 + "evt" + ")" * 500,
        "evt + " * 2000 + "1 > 0",
        "'evt' == 'evt'",
    ],
)
def test_hostile_selection_is_rejected_and_the_session_goes_on(server, two_files, tmp_path, text):
    marker = tmp_path / "pwned"
    text = text.replace("{marker}", str(marker))
    with DDSClient(server.host, server.port) as c:
        with pytest.raises(DDSError) as err:
            c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest", selection=text))
        assert err.value.message_type is MessageType.BAD_SELECTION
        assert not marker.exists()
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest", selection="evt < 3"))
        assert [c.next(timeout=2)["DaqSnarl"]["evt"] for _ in range(3)] == [0, 1, 2]
    assert not marker.exists()


def test_unknown_branch_error_names_the_closest_branch(server, two_files):
    with DDSClient(server.host, server.port) as c:
        with pytest.raises(DDSError) as err:
            c.subscribe(Subscription(streams=["DaqSnarl"], selection="nhit > 3"))
    msg = str(err.value)
    assert "nhit" in msg and "nhits" in msg and "DaqSnarl" in msg


def test_branches_limit_what_is_sent(server, two_files):
    with client_for(server, branches={"DaqSnarl": ["evt", "energy"]}, selection="kind == 1") as c:
        b = c.next_batch(100, timeout=2)
        rs = c.next(timeout=2)
    assert sorted(b.arrays.fields) == ["energy", "evt"]
    assert sorted(rs["DaqSnarl"]) == ["energy", "evt"]


def test_unknown_branch_in_branches_is_a_bad_subscription(server, two_files):
    with DDSClient(server.host, server.port) as c:
        with pytest.raises(DDSError) as err:
            c.subscribe(Subscription(streams=["DaqSnarl"], branches={"DaqSnarl": ["energi"]}))
        assert err.value.message_type is MessageType.BAD_SUBSCRIPTION
        assert "energy" in str(err.value)


def test_resubscribe_applies_from_the_current_position(server, two_files):
    d = two_files
    with client_for(server, selection="kind == 1") as c:
        first = [c.next(timeout=2)["DaqSnarl"]["evt"] for _ in range(20)]
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", selection="kind == 2"))
        after = [c.next(timeout=2)["DaqSnarl"]["evt"] for _ in range(20)]
    ones = d["evt"][d["kind"] == 1]
    assert first == ones[:20].tolist()
    twos = d["evt"][(d["kind"] == 2) & (d["evt"] > first[-1])]
    assert after == twos[:20].tolist()


def test_prescale_delivers_every_nth_passing_record(server, two_files):
    d = two_files
    passing = d["evt"][d["kind"] != 0]
    with client_for(server, selection="kind != 0", prescale=5) as c:
        _, got = drain(c, max_records=333)
    assert got["evt"].to_list() == passing[::5].tolist()


def test_selection_per_stream_and_reduction_over_a_jagged_branch(server, data_dir):
    n = 500
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 6, n)
    hits = ak.unflatten(rng.random(counts.sum()).astype(np.float32), counts)
    write_file(
        data_dir / "F00000002_0000.mdaq.root",
        {"DaqSnarl": {"evt": np.arange(n), "adc": hits},
         "DaqMonitor": {"evt": np.arange(0, n, 10), "rate": np.arange(0, n, 10) * 1.5}},
    )
    sel = {"DaqSnarl": "len(adc) > 2 && sum(adc) > 1.5", "DaqMonitor": "rate > 300"}
    with client_for(server, streams=["DaqSnarl", "DaqMonitor"], selection=sel) as c:
        seen = {"DaqSnarl": [], "DaqMonitor": []}
        for _ in range(50):
            try:
                b = c.next_batch(1000, timeout=1)
            except DDSTimeout:
                break
            seen[b.stream].extend(b.arrays["evt"].to_list())
    truth = np.arange(n)[(counts > 2) & (ak.to_numpy(ak.sum(hits, axis=1)) > 1.5)]
    assert seen["DaqSnarl"] == truth.tolist()
    assert seen["DaqMonitor"] == [e for e in range(0, n, 10) if e * 1.5 > 300]


def test_bare_jagged_branch_in_selection_is_refused_naming_it(server, data_dir):
    write_file(data_dir / "F00000003_0000.mdaq.root",
               {"DaqSnarl": {"evt": np.arange(3), "adc": ak.Array([[1.0], [], [2.0, 3.0]])}})
    with DDSClient(server.host, server.port) as c:
        with pytest.raises(DDSError) as err:
            c.subscribe(Subscription(streams=["DaqSnarl"], selection="adc > 1"))
    assert err.value.message_type is MessageType.BAD_SELECTION
    assert "adc" in str(err.value)


# --------------------------------------------------------------------------- event building


def _two_streams(path, snarl_evts, monitor_evts):
    write_file(
        path,
        {
            "DaqSnarl": {"evt": np.asarray(snarl_evts, dtype=np.int64), "x": np.asarray(snarl_evts) * 2.0},
            "DaqMonitor": {"evt": np.asarray(monitor_evts, dtype=np.int64), "y": np.asarray(monitor_evts) * 3.0},
        },
    )


def test_sync_builds_sets_and_names_missing_streams_on_closed_file(server, data_dir):
    _two_streams(data_dir / "F00000004_0000.mdaq.root", range(10), [0, 2, 3, 7])
    _two_streams(data_dir / "F00000004_0001.mdaq.root", range(10, 12), [10, 11])
    with client_for(server, streams=["DaqSnarl", "DaqMonitor"], sync="evt") as c:
        sets = [c.next(timeout=2) for _ in range(12)]
    assert [rs["DaqSnarl"]["evt"] for rs in sets] == list(range(12))
    for rs in sets:
        evt = rs["DaqSnarl"]["evt"]
        if evt in (0, 2, 3, 7, 10, 11):
            assert rs.missing == () and rs["DaqMonitor"]["evt"] == evt and rs["DaqMonitor"]["y"] == evt * 3.0
        else:
            assert rs.missing == ("DaqMonitor",) and "DaqMonitor" not in rs
    assert sets[0].entries == {"DaqSnarl": 0, "DaqMonitor": 0}
    assert sets[10].file == "F00000004_0001.mdaq.root"


def test_sync_batch_aligns_streams_with_none_where_missing(server, data_dir):
    _two_streams(data_dir / "F00000005_0000.mdaq.root", range(6), [1, 4, 5])
    with client_for(server, streams=["DaqSnarl", "DaqMonitor"], sync="evt") as c:
        b = c.next_batch(100, timeout=2)
    assert len(b) == 6 and b.stream is None
    assert b.arrays["DaqSnarl"]["evt"].to_list() == list(range(6))
    assert b.arrays["DaqMonitor"]["evt"].to_list() == [None, 1, None, None, 4, 5]
    assert b.entries["DaqMonitor"].tolist() == [-1, 0, -1, -1, 1, 2]


def test_sync_on_open_file_waits_for_a_late_stream_then_gives_up(server, data_dir):
    path = data_dir / "F00000006_0000.mdaq.root"
    f = uproot.recreate(str(path))
    snarl = f.mktree("DaqSnarl", {"evt": "int64"})
    mon = f.mktree("DaqMonitor", {"evt": "int64"})
    snarl.extend({"evt": np.array([0, 1], dtype=np.int64)})
    try:
        with client_for(server, streams=["DaqSnarl", "DaqMonitor"], sync="evt", max_sync_delay=1.0) as c:
            # evt 0 of DaqMonitor arrives within the delay: a complete set
            threading.Timer(0.3, lambda: mon.extend({"evt": np.array([0], dtype=np.int64)})).start()
            first = c.next(timeout=5)
            assert first.missing == () and first["DaqMonitor"]["evt"] == 0
            # evt 1 never comes for DaqMonitor: after max_sync_delay it is left out
            t0 = time.monotonic()
            second = c.next(timeout=20)
            waited = time.monotonic() - t0
            assert second["DaqSnarl"]["evt"] == 1 and second.missing == ("DaqMonitor",)
            assert 0.7 < waited < 10.0  # after max_sync_delay, not at the end of next()'s timeout
    finally:
        f.close()


def test_sync_branch_missing_from_a_stream_is_a_bad_subscription(server, data_dir):
    write_file(data_dir / "F00000007_0000.mdaq.root",
               {"DaqSnarl": {"evt": np.arange(3)}, "DaqMonitor": {"t": np.arange(3)}})
    with DDSClient(server.host, server.port) as c:
        with pytest.raises(DDSError) as err:
            c.subscribe(Subscription(streams=["DaqSnarl", "DaqMonitor"], sync="evt"))
    assert err.value.message_type is MessageType.BAD_SUBSCRIPTION
    assert "DaqMonitor" in str(err.value)


@pytest.mark.parametrize("prescale", [1, 3])
def test_advance_by_and_prefetch_agree_with_a_client_without_prefetch(server, two_files, prescale):
    steps = [1, 3, 1, 300, 2, 1, 1000, 1, 7]
    got = {}
    for prefetch in (1, 256):
        with DDSClient(server.host, server.port, prefetch=prefetch) as c:
            c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest", selection="kind != 3",
                                     prescale=prescale))
            seq = [(rs.file, rs.entries["DaqSnarl"]) for rs in (c.next(timeout=2, advance_by=k) for k in steps)]
            seq.append(c.next_batch(4, timeout=2).entries.tolist())  # gives the prefetched rest back
            seq.extend(c.next(timeout=2).entries["DaqSnarl"] for _ in range(5))
            c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", selection="kind == 3"))
            seq.append(c.next(timeout=2)["DaqSnarl"]["evt"])
            seq.append(c.next_batch(5, timeout=2).entries.tolist())
            got[prefetch] = seq
    assert got[1] == got[256]
    d = two_files
    passing = d["evt"][d["kind"] != 3][::prescale]
    assert got[1][0][1] == passing[0] and got[1][1][1] == passing[3]


@pytest.mark.parametrize("prefetch", [1, 256])
def test_resubscribe_continues_right_after_the_last_served_record(server, two_files, prefetch):
    with DDSClient(server.host, server.port, prefetch=prefetch) as c:
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest", selection="kind == 1"))
        last = [c.next(timeout=2).entries["DaqSnarl"] for _ in range(3)][-1]
        c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all"))  # no cut: every record
        assert [c.next(timeout=2).entries["DaqSnarl"] for _ in range(3)] == [last + 1, last + 2, last + 3]


def test_refused_first_subscription_leaves_no_subscription(server, two_files):
    with DDSClient(server.host, server.port) as c:
        with pytest.raises(DDSError) as err:
            c.subscribe(Subscription(streams=["DaqSnarl"], start="F99999999_0000.mdaq.root"))
        assert err.value.message_type is MessageType.NO_FILE
        with pytest.raises(DDSError) as err:
            c.next(timeout=5)
        assert err.value.message_type is MessageType.BAD_SUBSCRIPTION  # at once, not after the timeout
