"""The session in-process: real small ROOT files, fake time, no server and no sleeps.

Each test drives :class:`dispatcher.session.Session` directly with a
:class:`dispatcher.clock.FakeClock` as both clock and waiter: a wait advances
fake time at once, and ``call_later`` lets a file grow or appear in the middle
of a request.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import pytest
import uproot

from conftest import snarl_data, write_file
from dispatcher.catalog import Catalog
from dispatcher.clock import FakeClock
from dispatcher.layouts import OrderLayout, SetsLayout, SyncBatchLayout
from dispatcher.position import FileState
from dispatcher.protocol import MessageType
from dispatcher.session import Session, SessionError
from dispatcher.subscription import Subscription

A, B, C = "F00000001_0000.mdaq.root", "F00000001_0001.mdaq.root", "F00000001_0002.mdaq.root"
POLL = 0.01


@pytest.fixture
def clock():
    return FakeClock(start=1000.0)


@pytest.fixture
def session(data_dir, clock):
    s = Session(Catalog(str(data_dir)), clock, poll_interval=POLL, clock=clock)
    yield s
    s.close()


def closed(path) -> None:
    """Date the file back, as a file the DAQ finished long ago (its reader trusts its stat)."""
    past = time.time() - 60
    os.utime(path, (past, past))


def snarl_file(data_dir, name: str, first: int, n: int, *, steps: int = 2) -> dict:
    d = snarl_data(first, n)
    write_file(data_dir / name, {"DaqSnarl": d}, steps=steps)
    closed(data_dir / name)
    return d


@contextlib.contextmanager
def open_snarl(path, n: int):
    """A file the DAQ still writes: a DaqSnarl of evt 0..n-1; yields the tree, for the test to extend."""
    with uproot.recreate(str(path)) as f:
        tree = f.mktree("DaqSnarl", {"evt": "int64"})
        tree.extend({"evt": np.arange(n, dtype=np.int64)})
        yield tree


def two_streams(path, snarl_evts, monitor_evts) -> None:
    write_file(path, {
        "DaqSnarl": {"evt": np.asarray(snarl_evts, dtype=np.int64)},
        "DaqMonitor": {"evt": np.asarray(monitor_evts, dtype=np.int64)},
    })
    closed(path)


def sub(**kw) -> Subscription:
    return Subscription(**{"streams": ["DaqSnarl"], "keep_up": "all", "start": "oldest", **kw})


def sets_of(parts, layout) -> list[dict]:
    """The record sets of one reply: ``{stream: (file, entry, evt)}`` each, in order."""

    def record(i: int, row: int) -> dict:
        p = parts[i]
        return {p.stream: (p.file, int(p.entries[row]), int(p.arrays["evt"][row]))}

    if isinstance(layout, OrderLayout):
        rows = [0] * len(parts)
        out = []
        for i in layout.order:
            out.append(record(i, rows[i]))
            rows[i] += 1
        return out
    assert isinstance(layout, SetsLayout)
    return [{k: v for i, r in s.members for k, v in record(i, r).items()} for s in layout.sets]


def next_evt(session, stream="DaqSnarl", **kw) -> int:
    (rs,) = sets_of(*session.next(kw.pop("timeout", 1.0), **kw))
    return rs[stream][2]


def drain(session, max_records=1000, timeout=0.5) -> list[tuple[str, int]]:
    """Every batch until the first timeout: (file, evt) per record."""
    got: list[tuple[str, int]] = []
    while True:
        try:
            parts, layout = session.next_batch(max_records, timeout)
        except SessionError as exc:
            assert exc.message_type is MessageType.TIMEOUT
            return got
        assert layout is None and len(parts) == 1
        got.extend((parts[0].file, int(e)) for e in parts[0].arrays["evt"])


# ------------------------------------------------------------------ keep-up modes


def test_all_mode_serves_every_record_of_every_file_in_order(session, data_dir):
    snarl_file(data_dir, A, 0, 300)
    snarl_file(data_dir, B, 300, 200)
    snarl_file(data_dir, C, 500, 100)
    session.subscribe(sub())
    got = drain(session, max_records=128)
    assert [e for _, e in got] == list(range(600))
    assert [f for f, _ in got] == [A] * 300 + [B] * 200 + [C] * 100


def test_file_mode_skips_to_the_newest_file_once_the_current_one_is_served(session, data_dir):
    snarl_file(data_dir, A, 0, 50)
    snarl_file(data_dir, B, 50, 50)
    snarl_file(data_dir, C, 100, 50)
    session.subscribe(sub(keep_up="file"))
    got = drain(session)
    assert got == [(A, e) for e in range(50)] + [(C, e) for e in range(100, 150)]


def test_next_merges_streams_by_entry(session, data_dir):
    two_streams(data_dir / A, [0, 1, 2], [10, 11])
    session.subscribe(sub(streams=["DaqSnarl", "DaqMonitor"]))
    parts, layout = session.next(1.0, prefetch=5)
    assert isinstance(layout, OrderLayout)
    got = [(s, v[1]) for rs in sets_of(parts, layout) for s, v in rs.items()]
    assert got == [("DaqSnarl", 0), ("DaqMonitor", 0), ("DaqSnarl", 1), ("DaqMonitor", 1), ("DaqSnarl", 2)]


def test_record_mode_serves_the_newest_record_and_waits_for_a_newer_one(session, data_dir, clock):
    with open_snarl(data_dir / A, 100) as tree:
        session.subscribe(sub(keep_up="record"))
        parts, layout = session.next(1.0)
        assert isinstance(layout, SetsLayout) and layout.sets[0].missing == ()
        assert sets_of(parts, layout) == [{"DaqSnarl": (A, 99, 99)}]
        # nothing newer: a new record written while the request waits is the answer
        clock.call_later(0.2, tree.extend, {"evt": np.arange(100, 110, dtype=np.int64)})
        t0 = clock.now
        assert next_evt(session) == 109
        assert clock.now - t0 >= 0.2
        with pytest.raises(SessionError) as err:
            session.next(0.1)
        assert err.value.message_type is MessageType.TIMEOUT


def test_record_mode_batch_gives_the_newest_records_in_entry_order(session, data_dir):
    snarl_file(data_dir, A, 0, 5000)
    session.subscribe(sub(keep_up="record", selection="evt % 2 == 0"))
    parts, layout = session.next_batch(10, 1.0)
    assert layout is None
    assert parts[0].arrays["evt"].to_list() == list(range(4980, 5000, 2))


def test_record_mode_jumps_to_the_newest_file(session, data_dir, clock):
    snarl_file(data_dir, A, 0, 10)
    session.subscribe(sub(keep_up="record"))
    assert next_evt(session) == 9
    clock.call_later(0.05, snarl_file, data_dir, B, 10, 10)
    assert next_evt(session) == 19


# ------------------------------------------------------------------ selection and prescale


def test_prescale_delivers_every_nth_passing_record(session, data_dir):
    d = snarl_file(data_dir, A, 0, 1000, steps=4)
    session.subscribe(sub(selection="kind != 0", prescale=3))
    got = [e for _, e in drain(session, max_records=77)]
    assert got == d["evt"][d["kind"] != 0][::3].tolist()


@pytest.mark.parametrize("prescale", [1, 3])
def test_prefetch_and_rewind_agree_with_a_client_without_prefetch(data_dir, clock, prescale):
    snarl_file(data_dir, A, 0, 600, steps=3)
    snarl_file(data_dir, B, 600, 600, steps=3)
    steps = [1, 3, 1, 100, 2, 1, 7]
    seqs = []
    for prefetch in (1, 64):
        s = Session(Catalog(str(data_dir)), clock, poll_interval=POLL, clock=clock)
        s.subscribe(sub(selection="kind != 3", prescale=prescale))
        seq = []
        for k in steps:
            parts, layout = s.next(1.0, advance_by=k, prefetch=prefetch)
            sets = sets_of(parts, layout)
            seq.append(sets[0]["DaqSnarl"][2])
            s.rewind(sets[0]["DaqSnarl"][0], {"DaqSnarl": 1})  # the client used the first only
        s.subscribe(sub(keep_up="all", start="current", selection="kind == 3"))
        seq.append(next_evt(s))
        seqs.append(seq)
        s.close()
    assert seqs[0] == seqs[1]


def test_rewind_after_prefetch_continues_right_after_the_last_used_record(session, data_dir):
    snarl_file(data_dir, A, 0, 100)
    session.subscribe(sub())
    parts, layout = session.next(1.0, prefetch=10)
    assert [rs["DaqSnarl"][2] for rs in sets_of(parts, layout)] == list(range(10))
    assert session.rewind(A, {"DaqSnarl": 3}) == {"file": A}
    assert next_evt(session) == 3
    session.next(1.0, prefetch=10)
    session.rewind(A, {"DaqSnarl": 0})
    assert next_evt(session) == 4


def test_resubscribe_applies_from_just_after_the_last_served_record(session, data_dir):
    d = snarl_file(data_dir, A, 0, 500)
    session.subscribe(sub(selection="kind == 1"))
    session.next(1.0, prefetch=50)  # read ahead and sent, but only ...
    session.rewind(A, {"DaqSnarl": 3})  # ... three used
    last = d["evt"][d["kind"] == 1][2]
    session.subscribe(sub(start="current"))
    assert [next_evt(session) for _ in range(3)] == [last + 1, last + 2, last + 3]


def test_read_ahead_reads_what_the_next_request_serves(session, data_dir):
    snarl_file(data_dir, A, 0, 2000, steps=8)
    session.subscribe(sub())
    assert next_evt(session) == 0
    while session.read_ahead():
        pass
    assert session.reader.streams["DaqSnarl"].pending_count() == 1999
    assert [e for _, e in drain(session)] == list(range(1, 2000))


# ------------------------------------------------------------------ event building


def test_sync_builds_sets_and_names_streams_missing_from_a_closed_file(session, data_dir):
    two_streams(data_dir / A, range(10), [0, 2, 3, 7])
    two_streams(data_dir / B, [10, 11], [10, 11])
    session.subscribe(sub(streams=["DaqSnarl", "DaqMonitor"], sync="evt"))
    for evt in range(12):
        parts, layout = session.next(1.0)
        (s,) = layout.sets
        if evt in (0, 2, 3, 7, 10, 11):
            assert s.missing == () and [p.stream for p in parts] == ["DaqSnarl", "DaqMonitor"]
        else:
            assert s.missing == ("DaqMonitor",) and [p.stream for p in parts] == ["DaqSnarl"]
        assert int(parts[0].arrays["evt"][0]) == evt
        assert s.file == (A if evt < 10 else B)


def test_sync_batch_gives_each_sets_row(session, data_dir):
    two_streams(data_dir / A, range(6), [1, 4, 5])
    session.subscribe(sub(streams=["DaqSnarl", "DaqMonitor"], sync="evt"))
    parts, layout = session.next_batch(100, 1.0)
    assert layout == SyncBatchLayout(6, {"DaqSnarl": [0, 1, 2, 3, 4, 5], "DaqMonitor": [1, 4, 5]})
    assert layout.to_info() == {"batch": {"length": 6, "positions": layout.positions}}
    assert [p.entries.tolist() for p in parts] == [[0, 1, 2, 3, 4, 5], [0, 1, 2]]


def test_sync_on_the_open_file_waits_max_sync_delay_for_a_late_stream(session, data_dir, clock):
    path = data_dir / A
    with uproot.recreate(str(path)) as f:
        snarl = f.mktree("DaqSnarl", {"evt": "int64"})
        mon = f.mktree("DaqMonitor", {"evt": "int64"})
        snarl.extend({"evt": np.array([0, 1], dtype=np.int64)})
        session.subscribe(sub(streams=["DaqSnarl", "DaqMonitor"], sync="evt", max_sync_delay=0.3))
        # evt 0 of DaqMonitor comes within the delay: a complete set
        clock.call_later(0.1, mon.extend, {"evt": np.array([0], dtype=np.int64)})
        parts, layout = session.next(5.0)
        assert layout.sets[0].missing == () and [p.stream for p in parts] == ["DaqSnarl", "DaqMonitor"]
        # evt 1 never comes for DaqMonitor: after max_sync_delay it is left out
        t0 = clock.now
        parts, layout = session.next(5.0)
        assert layout.sets[0].missing == ("DaqMonitor",) and int(parts[0].arrays["evt"][0]) == 1
        assert 0.3 <= clock.now - t0 < 0.4


def test_sync_branch_missing_from_a_stream_is_refused_naming_it(session, data_dir):
    write_file(data_dir / A, {"DaqSnarl": {"evt": np.arange(3)}, "DaqMonitor": {"t": np.arange(3)}})
    with pytest.raises(SessionError) as err:
        session.subscribe(sub(streams=["DaqSnarl", "DaqMonitor"], sync="evt"))
    assert err.value.message_type is MessageType.BAD_SUBSCRIPTION
    assert "sync branch 'evt' is not in stream DaqMonitor" in str(err.value)


def test_unknown_branch_is_refused_with_the_closest_one(session, data_dir):
    snarl_file(data_dir, A, 0, 10)
    with pytest.raises(SessionError) as err:
        session.subscribe(sub(branches={"DaqSnarl": ["energi"]}))
    assert err.value.message_type is MessageType.BAD_SUBSCRIPTION
    assert "unknown branch 'energi' in branches for stream DaqSnarl; did you mean 'energy'?" in str(err.value)
    with pytest.raises(SessionError) as err:
        session.subscribe(sub(selection="nhit > 3"))
    assert err.value.message_type is MessageType.BAD_SELECTION and "nhits" in str(err.value)


# ------------------------------------------------------------------ moving between files


def test_go_to_file_starts_at_entry_0_of_that_file(session, data_dir):
    snarl_file(data_dir, A, 0, 20)
    snarl_file(data_dir, B, 20, 20)
    session.subscribe(sub(start="current"))
    assert next_evt(session) == 20
    assert session.go_to_file(A) == {"file": A}
    assert [next_evt(session) for _ in range(3)] == [0, 1, 2]
    for bad in ("F99999999_0000.mdaq.root", "../etc/passwd", "/etc/passwd", ""):
        with pytest.raises(SessionError) as err:
            session.go_to_file(bad)
        assert err.value.message_type is MessageType.NO_FILE
    assert next_evt(session) == 3


def test_go_to_next_file_waits_for_the_next_file_to_appear(session, data_dir, clock):
    snarl_file(data_dir, A, 0, 20)
    session.subscribe(sub())
    assert next_evt(session) == 0
    clock.call_later(0.5, snarl_file, data_dir, B, 20, 20)
    assert session.go_to_next_file(5.0) == {"file": B}
    assert clock.now >= 1000.5
    assert next_evt(session) == 20
    with pytest.raises(SessionError) as err:
        session.go_to_next_file(1.0)
    assert err.value.message_type is MessageType.TIMEOUT and "no file after " + B in str(err.value)


def test_a_file_deleted_while_served_is_left_for_the_next(session, data_dir):
    snarl_file(data_dir, A, 0, 300)
    snarl_file(data_dir, B, 300, 10)
    session.subscribe(sub())
    assert next_evt(session) == 0
    (data_dir / A).unlink()
    rest = drain(session)
    assert rest[-10:] == [(B, e) for e in range(300, 310)]
    assert all(f == A for f, _ in rest[:-10])


# ------------------------------------------------------------------ start rules


@pytest.mark.parametrize(("start", "first"), [("oldest", 0), ("current", 20), (B, 20), (A, 0)])
def test_start_rules_name_the_first_file(session, data_dir, start, first):
    snarl_file(data_dir, A, 0, 20)
    snarl_file(data_dir, B, 20, 20)
    assert session.subscribe(sub(start=start)) == {"file": A if first == 0 else B}
    assert next_evt(session) == first


def test_latest_serves_only_records_written_after_subscribing(session, data_dir, clock):
    with open_snarl(data_dir / A, 10) as tree:
        session.subscribe(sub(start="latest"))
        clock.call_later(0.1, tree.extend, {"evt": np.arange(10, 15, dtype=np.int64)})
        assert [next_evt(session) for _ in range(5)] == [10, 11, 12, 13, 14]


@pytest.mark.parametrize("start", ["current", "latest", "oldest"])
def test_on_an_empty_directory_the_first_file_is_served_from_entry_0(session, data_dir, clock, start):
    assert session.subscribe(sub(start=start)) == {"file": None}
    assert session.position.state is FileState.WAITING
    with pytest.raises(SessionError) as err:
        session.next(0.1)
    assert err.value.message_type is MessageType.TIMEOUT and "an empty data directory" in str(err.value)
    clock.call_later(0.2, snarl_file, data_dir, A, 0, 10)
    assert [next_evt(session) for _ in range(3)] == [0, 1, 2]
    assert session.file == A and session.position.state is FileState.OPEN


def test_an_unknown_start_file_is_refused_and_leaves_no_subscription(session, data_dir):
    snarl_file(data_dir, A, 0, 10)
    with pytest.raises(SessionError) as err:
        session.subscribe(sub(start="F99999999_0000.mdaq.root"))
    assert err.value.message_type is MessageType.NO_FILE
    with pytest.raises(SessionError) as err:
        session.next(1.0)
    assert err.value.message_type is MessageType.BAD_SUBSCRIPTION


# ------------------------------------------------------------------ waiting


def test_timeout_is_a_timeout_error_in_fake_time_only(session, data_dir, clock):
    snarl_file(data_dir, A, 0, 5)
    session.subscribe(sub())
    assert len(drain(session, timeout=0.1)) == 5
    t0, wall = clock.now, time.monotonic()
    with pytest.raises(SessionError) as err:
        session.next(60.0)
    assert err.value.message_type is MessageType.TIMEOUT
    assert str(err.value) == f"no record passing the subscription in file {A} before the timeout"
    assert clock.now - t0 == pytest.approx(60.0)
    assert time.monotonic() - wall < 10.0  # no real minute


def test_a_quiet_file_is_polled_ever_less_often(session, data_dir, clock):
    snarl_file(data_dir, A, 0, 5)
    session.subscribe(sub())
    drain(session, timeout=0.1)
    clock.waited.clear()
    with pytest.raises(SessionError):
        session.next(30.0)
    assert clock.waited[0] == pytest.approx(POLL)
    assert max(clock.waited) == pytest.approx(5 * POLL)


def test_a_file_closed_while_read_is_read_to_its_final_length_before_moving_on(session, data_dir, clock):
    with open_snarl(data_dir / A, 5) as tree:
        session.subscribe(sub())
        assert [e for _, e in drain(session, timeout=0.05)] == list(range(5))
        assert session.position.state is FileState.OPEN
        tree.extend({"evt": np.arange(5, 8, dtype=np.int64)})
    snarl_file(data_dir, B, 100, 2)
    assert [e for _, e in drain(session, timeout=0.05)] == [5, 6, 7, 100, 101]


def test_requests_before_subscribe_are_refused(session, data_dir):
    snarl_file(data_dir, A, 0, 5)
    for call in (lambda: session.next(1.0), lambda: session.next_batch(5, 1.0), lambda: session.rewind(A, {})):
        with pytest.raises(SessionError) as err:
            call()
        assert err.value.message_type is MessageType.BAD_SUBSCRIPTION
    assert session.read_ahead() is False
