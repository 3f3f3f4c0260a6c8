"""Shared subscriptions (groups): real servers, real member processes, real files.

Each passing record goes to one live member; what a member held when it died goes to another,
marked redelivered; a late member gets only what was not handed out; a group keeps its place.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import uproot

from clients import DDSClient, DDSError, DDSTimeout, MessageType, Subscription
from conftest import ddscomm, snarl_data, write_file
from dispatcher.testing import wait_until

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STREAM = "DaqSnarl"


def _files(data_dir, sizes: list[int], steps: int = 10) -> list[tuple[str, int]]:
    """Closed-looking files F1..Fn (each a later name) with ``sizes`` records; (name, records) each."""
    first, out = 0, []
    for i, n in enumerate(sizes, 1):
        name = f"F{i:03d}.root"
        write_file(data_dir / name, {STREAM: snarl_data(first, n)}, steps=steps)
        out.append((name, n))
        first += n
    return out


def _passing(data_dir, names: list[str], cut=None) -> set[tuple[str, int]]:
    """(file, entry) of every record that passes ``cut`` (a function of the evt array), read with uproot."""
    out = set()
    for name in names:
        with uproot.open(str(data_dir / name)) as f:
            evt = f[STREAM]["evt"].array(library="np")
        keep = np.ones(len(evt), bool) if cut is None else cut(evt)
        out.update((name, int(e)) for e in np.flatnonzero(keep))
    return out


def _drain(client: DDSClient, got: list, batch: int = 500, idle: float = 1.0, limit: int = 1000) -> None:
    """Take batches until ``idle`` seconds bring nothing (bounded by ``limit`` batches)."""
    for _ in range(limit):
        try:
            b = client.next_batch(batch, timeout=idle)
        except DDSTimeout:
            return
        got.extend((b.file, int(e), b.redelivered) for e in b.entries)
    raise AssertionError("the group did not run dry")


def _leftovers(server, sub: Subscription) -> list:
    """What the group still has once its members closed: drained by a new member."""
    got: list = []
    with DDSClient(server.host, server.port) as c:
        c.subscribe(sub)
        _drain(c, got, idle=0.5)
    return got


def _member(server, out: Path, group: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(HERE / "group_member.py"), str(server.port), str(out), group, *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            pass
    return [d for d in out if "entries" in d]


def _sub(**kw) -> Subscription:
    return Subscription(streams=[STREAM], group=kw.pop("group", "farm"), start=kw.pop("start", "oldest"), **kw)


# --------------------------------------------------------------------------- the farm


def test_four_members_one_killed_union_is_complete_and_duplicates_are_marked(data_dir, server, tmp_path):
    names = [n for n, _ in _files(data_dir, [20_000, 20_000])]
    want = _passing(data_dir, names, lambda evt: evt % 7 != 3)
    procs, outs = [], []
    try:
        for i in range(4):
            out = tmp_path / f"m{i}.jsonl"
            extra = ["--pause-after", "2", "--pause", "30"] if i == 0 else ["--each", "0.02"]
            procs.append(_member(server, out, "farm", "--selection", "evt % 7 != 3", "--batch", "700", *extra))
            outs.append(out)
        # the victim has been handed two batches and sits on the second, unacknowledged
        wait_until(lambda: len(_lines(outs[0])) >= 2, 30, "the first member's two batches")
        held = {(d["file"], e) for d in _lines(outs[0])[-1:] for e in d["entries"]}
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        for p in procs[1:]:
            assert p.wait(60) == 0, p.stderr.read().decode()[-2000:] if p.stderr else ""
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    copies: Counter = Counter()
    redelivered: Counter = Counter()
    for out in outs:
        for d in _lines(out):
            for e in d["entries"]:
                copies[(d["file"], e)] += 1
                redelivered[(d["file"], e)] += d["redelivered"]
    assert set(copies) == want  # nothing lost, nothing that does not pass
    twice = {k for k, n in copies.items() if n > 1}
    assert held <= twice  # what the killed member held came again ...
    assert all(copies[k] == 2 and redelivered[k] == 1 for k in twice)  # ... once more, marked
    assert twice == held  # and nothing else came twice
    assert all(redelivered[k] == 0 for k in copies if k not in twice)
    for out in outs[1:]:  # the others worked too
        assert _lines(out)


def test_balanced_slow_member_receives_fewer(data_dir, server):
    names = [n for n, _ in _files(data_dir, [30_000])]
    got: dict[str, list] = {"fast": [], "slow": []}
    with DDSClient(server.host, server.port) as fast, DDSClient(server.host, server.port) as slow:
        fast.subscribe(_sub())
        slow.subscribe(_sub())

        def run(client, key, pause):
            for _ in range(1000):
                try:
                    b = client.next_batch(500, timeout=1.0)
                except DDSTimeout:
                    return
                got[key].extend((b.file, int(e)) for e in b.entries)
                time.sleep(pause)

        threads = [threading.Thread(target=run, args=(fast, "fast", 0.0)),
                   threading.Thread(target=run, args=(slow, "slow", 0.1))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    everything = got["fast"] + got["slow"]
    assert len(everything) == len(set(everything)) == 30_000
    assert set(everything) == _passing(data_dir, names)
    assert 0 < len(got["slow"]) < len(got["fast"]) / 3


def test_roundrobin_members_take_turns(data_dir, server):
    names = [n for n, _ in _files(data_dir, [20_000])]
    with DDSClient(server.host, server.port) as a, DDSClient(server.host, server.port) as b:
        a.subscribe(_sub(distribution="roundrobin"))
        b.subscribe(_sub(distribution="roundrobin"))
        seen: dict[str, list] = {"a": [], "b": []}
        for _ in range(8):  # strictly alternating askers get equal shares, in alternating ranges
            for key, c in (("a", a), ("b", b)):
                seen[key].extend(int(e) for e in c.next_batch(500, timeout=5).entries)
        assert len(seen["a"]) == len(seen["b"]) == 4_000
        assert seen["a"][0] < seen["b"][0] < seen["a"][-1] < seen["b"][-1]
        # b stops asking: once it is two ranges behind it is skipped, so a is not held up
        _drain(a, rest_a := [], batch=500, idle=0.5)
        assert rest_a
        # and b then gets the ranges that were cut for its turns
        _drain(b, rest_b := [], batch=500, idle=0.5)
        assert rest_b and min(e for _, e, _ in rest_b) < max(e for _, e, _ in rest_a)
    everything = seen["a"] + seen["b"] + [e for _, e, _ in rest_a + rest_b]
    assert sorted(everything) == sorted(e for _, e in _passing(data_dir, names))


def test_member_joining_late_gets_only_what_was_not_handed_out(data_dir, server):
    names = [n for n, _ in _files(data_dir, [10_000])]
    early, late = [], []
    with DDSClient(server.host, server.port) as b:
        with DDSClient(server.host, server.port) as a:
            a.subscribe(_sub())
            for _ in range(4):
                got = a.next_batch(1000, timeout=5)
                early.extend((got.file, int(e)) for e in got.entries)
            info = b.subscribe(_sub(start="current"))  # its start does not move the group
            assert info["group"]["created"] is False and info["group"]["members"] == 2
            _drain(b, late, idle=0.5)
        # a's server read the range after its last batch ahead, while a was busy: a's close gave it back
        _drain(b, late, idle=0.5)
    late_keys = {(f, e) for f, e, _ in late}
    assert len(late_keys) == len(late)
    assert not late_keys & set(early)
    assert min(e for _, e in late_keys) >= 4000
    assert late_keys | set(early) == _passing(data_dir, names)
    assert not any(r for _, _, r in late)


def test_group_of_one_is_like_a_plain_subscription(data_dir, server):
    _files(data_dir, [3_000, 2_000])
    cut = "nhits > 28 && kind != 2"
    plain, grouped = [], []
    with DDSClient(server.host, server.port) as c:
        c.subscribe(streams=[STREAM], keep_up="all", start="oldest", selection=cut, prescale=3)
        _drain(c, plain, batch=400, idle=0.5)
    with DDSClient(server.host, server.port) as c:
        c.subscribe(_sub(group="solo", selection=cut, prescale=3))
        _drain(c, grouped, batch=400, idle=0.5)
    assert plain and [(f, e) for f, e, _ in grouped] == [(f, e) for f, e, _ in plain]
    # next() too: record sets, the same values
    with DDSClient(server.host, server.port) as c:
        c.subscribe(_sub(group="solo2", selection=cut, prescale=3))
        sets = [c.next(timeout=5) for _ in range(len(plain))]
        with pytest.raises(DDSTimeout):
            c.next(timeout=0.3)
    assert [(rs.file, rs.entries[STREAM]) for rs in sets] == [(f, e) for f, e, _ in plain]
    assert all(rs[STREAM]["nhits"] > 28 and rs[STREAM]["kind"] != 2 and not rs.redelivered for rs in sets)


def test_prescale_is_shared_across_members(data_dir, server):
    names = [n for n, _ in _files(data_dir, [6_000, 3_000])]
    got = []
    with DDSClient(server.host, server.port) as a, DDSClient(server.host, server.port) as b:
        a.subscribe(_sub(selection="kind == 1", prescale=4))
        b.subscribe(_sub(selection="kind == 1", prescale=4))
        for _ in range(200):
            try:
                for c in (a, b):
                    bt = c.next_batch(97, timeout=0.5)
                    got.extend((bt.file, int(e)) for e in bt.entries)
            except DDSTimeout:
                break
    got += [(f, e) for f, e, _ in _leftovers(server, _sub(selection="kind == 1", prescale=4))]
    # the 1st, 5th, 9th ... passing record of the stream, over the files in order
    passing = []
    for name in names:
        with uproot.open(str(data_dir / name)) as f:
            kind = f[STREAM]["kind"].array(library="np")
        passing += [(name, int(e)) for e in np.flatnonzero(kind == 1)]
    assert sorted(got) == passing[::4]


def test_live_writer_while_the_group_drains(data_dir, server):
    path = data_dir / "F001.root"
    total, step = 6_000, 200
    ready = threading.Event()

    def write():
        with uproot.recreate(str(path)) as f:
            f.mktree(STREAM, {k: v.dtype for k, v in snarl_data(0, 1).items()})
            for first in range(0, total, step):
                f[STREAM].extend(snarl_data(first, step))
                ready.set()
                time.sleep(0.01)

    writer = threading.Thread(target=write)
    writer.start()
    got: dict[str, list] = {"a": [], "b": []}
    try:
        ready.wait(10)
        with DDSClient(server.host, server.port) as a, DDSClient(server.host, server.port) as b:
            a.subscribe(_sub(start="current"))
            b.subscribe(_sub(start="current"))
            threads = [threading.Thread(target=_drain, args=(c, got[k], 300, 1.5)) for k, c in (("a", a), ("b", b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
    finally:
        writer.join(30)
    everything = [(f, e) for f, e, _ in got["a"] + got["b"]]
    assert len(everything) == len(set(everything))
    assert set(everything) == {("F001.root", e) for e in range(total)}
    assert got["a"] and got["b"]


def test_group_keeps_its_place_after_everyone_left(data_dir, server):
    names = [n for n, _ in _files(data_dir, [5_000])]
    first = []
    with DDSClient(server.host, server.port) as a:
        a.subscribe(_sub())
        for _ in range(3):
            b = a.next_batch(1000, timeout=5)
            first.extend((b.file, int(e)) for e in b.entries)
    rest = []
    with DDSClient(server.host, server.port) as a:
        info = a.subscribe(_sub())  # start="oldest" again: the group's place wins
        assert info["group"]["created"] is False
        _drain(a, rest, idle=0.5)
    assert sorted(first) == [(names[0], e) for e in range(3000)]
    assert sorted((f, e) for f, e, _ in rest) == [(names[0], e) for e in range(3000, 5000)]
    assert not any(r for _, _, r in rest)


def test_group_forgotten_after_linger_starts_again(data_dir, server_factory):
    _files(data_dir, [2_000])
    server = server_factory(data_dir, "--group-linger", "0.3")
    with DDSClient(server.host, server.port) as a:
        a.subscribe(_sub())
        assert len(a.next_batch(1500, timeout=5)) == 1500
    wait_until(lambda: "group farm forgotten" in server.log, 10, "the group forgotten")
    with DDSClient(server.host, server.port) as a:
        assert a.subscribe(_sub())["group"]["created"] is True
        assert a.next_batch(1000, timeout=5).entries[0] == 0


def test_next_prefetch_given_back_at_close_goes_to_the_next_member_unmarked(data_dir, server):
    names = [n for n, _ in _files(data_dir, [3_000])]
    with DDSClient(server.host, server.port, prefetch=500) as a:
        a.subscribe(_sub())
        handed = [a.next(timeout=5) for _ in range(10)]  # the reply brought up to 500; 10 handed out
    rest = []
    with DDSClient(server.host, server.port) as b:
        b.subscribe(_sub())
        _drain(b, rest, idle=0.5)
    keys = [(rs.file, rs.entries[STREAM]) for rs in handed] + [(f, e) for f, e, _ in rest]
    assert sorted(keys) == sorted(_passing(data_dir, names))
    assert not any(r for _, _, r in rest)


def test_restore_drop_loses_what_the_dead_member_held_and_nothing_else(data_dir, server, tmp_path):
    names = [n for n, _ in _files(data_dir, [10_000])]
    victim_out, other_out = tmp_path / "v.jsonl", tmp_path / "o.jsonl"
    victim = _member(server, victim_out, "once", "--restore", "drop", "--batch", "800", "--pause-after", "1",
                     "--pause", "30")
    other = None
    try:
        wait_until(lambda: _lines(victim_out), 30, "the victim's first batch")
        victim.kill()
        victim.wait(10)
        other = _member(server, other_out, "once", "--restore", "drop", "--batch", "800")
        assert other.wait(60) == 0
    finally:
        for p in (victim, other):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
    lost = {(d["file"], e) for d in _lines(victim_out) for e in d["entries"]}
    got = [(d["file"], e) for d in _lines(other_out) for e in d["entries"]]
    assert len(got) == len(set(got))
    assert set(got) == _passing(data_dir, names) - lost
    assert not any(d["redelivered"] for d in _lines(other_out))
    wait_until(lambda: "dropped (restore=drop)" in server.log, 10, "the drop logged")


# --------------------------------------------------------------------------- refusals and status


def test_members_must_subscribe_alike_and_cannot_move(data_dir, server):
    _files(data_dir, [1_000])
    with DDSClient(server.host, server.port) as a, DDSClient(server.host, server.port) as b:
        a.subscribe(_sub(selection="kind == 1"))
        with pytest.raises(DDSError) as e:
            b.subscribe(_sub(selection="kind == 2"))
        assert e.value.message_type is MessageType.BAD_SUBSCRIPTION and "selection='kind == 1'" in str(e.value)
        with pytest.raises(DDSError) as e:
            b.subscribe(_sub(selection="kind == 1", distribution="roundrobin"))
        assert "distribution" in str(e.value)
        with pytest.raises(DDSError) as e:
            a.go_to_file("F001.root")
        assert e.value.message_type is MessageType.BAD_SUBSCRIPTION and "cannot move" in str(e.value)
        assert len(a.next_batch(10, timeout=5)) > 0  # the session goes on
        # leaving the group by subscribing alone: a plain subscription from its own start
        a.subscribe(streams=[STREAM], keep_up="all", start="oldest")
        assert a.next_batch(5, timeout=5).entries.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="keep_up='all'"):
        Subscription(streams=[STREAM], group="g", keep_up="file")
    with pytest.raises(ValueError, match="sync"):
        Subscription(streams=[STREAM], group="g", sync="evt")
    with pytest.raises(ValueError, match="distribution"):
        Subscription(streams=[STREAM], group="g", distribution="fastest")


def test_status_shows_groups_members_and_in_flight(data_dir, server):
    _files(data_dir, [4_000])
    with DDSClient(server.host, server.port) as a, DDSClient(server.host, server.port) as b:
        a.subscribe(_sub(group="calib"))
        b.subscribe(_sub(group="calib"))
        assert len(a.next_batch(700, timeout=5)) == 700

        def status():
            out = ddscomm("--status", "--json", "-H", "127.0.0.1", "-p", str(server.port), timeout=30)
            got = json.loads(out.stdout)
            # the client rows come from the children's reports, sent at most every half second
            return got if {c["group"] for c in got["clients"]} == {"calib"} else None

        status = wait_until(status, 10, "both members' rows")
        (g,) = status["groups"]
        assert g["name"] == "calib" and len(g["members"]) == 2 and g["in_flight"] == 700
        assert g["distribution"] == "balanced" and g["restore"] == "redeliver"
        text = ddscomm("--status", "-H", "127.0.0.1", "-p", str(server.port), timeout=30).stdout
        assert "calib" in text and "in flight" in text


def test_group_state_survives_a_parent_restart(data_dir, server_factory, tmp_path):
    names = [n for n, _ in _files(data_dir, [6_000])]
    state = tmp_path / "groups.json"
    first, held = [], []
    server = server_factory(data_dir, "--group-state", str(state))
    a = DDSClient(server.host, server.port)
    a.subscribe(_sub())
    for _ in range(2):
        b = a.next_batch(1000, timeout=5)
        first.extend((b.file, int(e)) for e in b.entries)
    b = a.next_batch(1000, timeout=5)  # handed, never acknowledged: the server stops under it
    held = [(b.file, int(e)) for e in b.entries]
    server.stop()
    a.close()
    assert json.loads(state.read_text())["groups"][0]["name"] == "farm"
    server = server_factory(data_dir, "--group-state", str(state))
    rest = []
    with DDSClient(server.host, server.port) as c:
        assert c.subscribe(_sub())["group"]["created"] is False
        _drain(c, rest, idle=0.5)
    again = [(f, e) for f, e, r in rest if r]
    assert sorted(again) == held  # what was in flight comes again, marked
    assert sorted(first + [(f, e) for f, e, _ in rest]) == sorted(_passing(data_dir, names))


def test_metrics_show_each_group(data_dir, server_factory):
    from test_status import scrape

    _files(data_dir, [4_000])
    server = server_factory(data_dir, "--metrics-port", "0")
    with DDSClient(server.host, server.port) as a, DDSClient(server.host, server.port) as b:
        a.subscribe(_sub(group="calib"))
        b.subscribe(_sub(group="calib"))
        n = len(a.next_batch(700, timeout=5))
        m = scrape(server)
    label = (("group", "calib"),)
    assert m[("dds_group_members", label)] == 2
    assert m[("dds_group_in_flight_records", label)] == n == m[("dds_group_records_handed_total", label)]
    assert m[("dds_group_records_redelivered_total", label)] == 0


def test_a_member_leaving_on_an_exception_has_its_last_batch_redelivered(data_dir, server):
    names = [n for n, _ in _files(data_dir, [3_000])]
    with DDSClient(server.host, server.port) as b:
        b.subscribe(_sub())
        with pytest.raises(RuntimeError), DDSClient(server.host, server.port) as a:
            a.subscribe(_sub())
            failed = a.next_batch(1000, timeout=5)
            raise RuntimeError("the worker's code failed on this batch")
        rest: list = []
        _drain(b, rest, idle=0.5)
    again = {(f, e) for f, e, r in rest if r}
    assert again == {(failed.file, int(e)) for e in failed.entries}
    assert {(f, e) for f, e, _ in rest} == _passing(data_dir, names)
