"""Growing files followed in place: what the tail reader reports and reads equals a fresh uproot read.

A writer process appends with uproot's writer (and with ROOT's TTree::Fill and
AutoSave) as fast as it can while a FileReader polls; at every poll the entries it
reports, and the records it reads, must be exactly those a fresh ``uproot.open``
reads. The follower's fallbacks (tree moved, new cycle, new stream, file replaced
or shrunk) are driven step by step in one process.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from clients import DDSClient, DDSTimeout, Subscription
from dispatcher import baskets, incremental, tail
from dispatcher.tail import FileReader

STREAM = "Live"
TYPES = {"evt": np.int64, "stamp": np.float64, "hits": "var * float32", "tag": "string"}
BRANCHES = ["evt", "stamp", "hits", "nhits", "tag"]
#: every loop and wait in this file ends within this many seconds
WAIT = 20.0

WRITER = textwrap.dedent("""
    import sys, time
    import awkward as ak, numpy as np, uproot
    path, appends, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    types = {"evt": np.int64, "stamp": np.float64, "hits": "var * float32", "tag": "string"}
    with uproot.recreate(path + ".tmp") as f:
        tree = f.mktree("Live", types)
        evt = 0
        for i in range(appends):
            n = 1 + i % 13  # uneven appends: baskets of every size
            e = np.arange(evt, evt + n, dtype=np.int64)
            hits = ak.unflatten(np.arange((e % 4).sum(), dtype=np.float32), e % 4)
            tags = ak.Array([f"t{x % 7}" * (x % 3) for x in e.tolist()])
            tree.extend({"evt": e, "stamp": e * 0.5, "hits": hits, "tag": tags})
            evt += n
            if i == 0:
                import os; os.replace(path + ".tmp", path); print("ready", flush=True)
            if pause:
                time.sleep(pause)
    print(evt, flush=True)
""")


def records(first: int, n: int) -> dict:
    e = np.arange(first, first + n, dtype=np.int64)
    return {"evt": e, "stamp": e * 0.5, "hits": ak.unflatten(np.arange((e % 4).sum(), dtype=np.float32), e % 4),
            "tag": ak.Array([f"t{x % 7}" * (x % 3) for x in e.tolist()])}


def start_writer(path: Path, appends: int, pause: float = 0.0) -> subprocess.Popen:
    w = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(appends), str(pause)],
                         stdout=subprocess.PIPE, text=True)
    assert w.stdout is not None and w.stdout.readline().strip() == "ready"
    return w


def fresh(path: Path, start: int, stop: int) -> ak.Array:
    """Entries ``[start, stop)`` as a fresh ``uproot.open`` reads them (a torn state is read again)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            tree = uproot.open(path)[STREAM]
            if tree.num_entries >= stop:
                return tree.arrays(entry_start=start, entry_stop=stop)
        except Exception:
            if time.monotonic() > deadline:
                raise
        assert time.monotonic() < deadline, f"no fresh read of {start}:{stop}"
        time.sleep(0.001)


class Counting(FileReader):
    """A FileReader that counts its full parses of the file."""

    parses = 0

    def _open_once(self, strict: bool = True) -> None:
        self.parses += 1
        super()._open_once(strict)


def follow_to_the_end(reader: FileReader, path: Path, writer: subprocess.Popen) -> tuple[int, int]:
    """Poll ``reader`` until the writer is done; every poll's new entries checked. (polls, entries)."""
    seen = polls = 0
    deadline = time.monotonic() + WAIT
    while True:
        assert time.monotonic() < deadline, f"the reader saw {seen} entries in {WAIT} s"
        done = writer.poll() is not None
        reader.refresh(force=done)
        polls += 1
        n = reader.trees[STREAM].num_entries
        assert n >= seen
        if n > seen:
            got = reader.read(STREAM, BRANCHES, seen, n)
            want = fresh(path, seen, n)
            assert ak.array_equal(got[want.fields], want), f"entries {seen}:{n} differ from uproot's"
            assert got["evt"].to_list() == list(range(seen, n))
            seen = n
        if done:
            return polls, seen


# --------------------------------------------------------------------------- hammering


def test_every_poll_of_a_file_uproot_appends_to_reads_what_uproot_reads(tmp_path):
    path = tmp_path / "grow.root"
    writer = start_writer(path, 1500)
    reader = Counting(str(path))
    try:
        reader.refresh()
        assert reader._follower is not None
        polls, seen = follow_to_the_end(reader, path, writer)
    finally:
        reader.close()
        writer.kill()
        writer.wait()
    total = int(writer.stdout.read().split()[-1])
    assert seen == total
    # parsed once, again when the tree outgrew its basket slots (moved), and once for the end (forced);
    # a poll that meets an append half-written looks again before it parses the file anew
    assert reader.parses <= 12, f"{reader.parses} full parses in {polls} polls"


@pytest.mark.parametrize("compression", [0, 101])
def test_a_file_root_fills_and_autosaves_reads_what_uproot_reads(tmp_path, compression):
    import ROOT  # noqa: F401  (the test extra installs it: a missing ROOT fails here, never skips)
    path = tmp_path / "root.root"
    script = textwrap.dedent("""
        import array, sys
        import ROOT
        path, n, every, compression = sys.argv[1], 600, 7, int(sys.argv[2])
        f = ROOT.TFile(path, "RECREATE", "", compression)
        t = ROOT.TTree("Live", "Live")
        evt, x = array.array("q", [0]), array.array("d", [0.0])
        t.Branch("evt", evt, "evt/L"); t.Branch("stamp", x, "stamp/D")
        t.SetAutoSave(0); t.AutoSave("SaveSelf"); f.Flush()
        print("ready", flush=True)
        for i in range(n):
            evt[0], x[0] = i, i * 0.5
            t.Fill()
            if (i + 1) % every == 0:
                t.AutoSave("SaveSelf"); f.Flush()
        t.AutoSave("SaveSelf"); f.Close()
        print(n, flush=True)
    """)
    writer = subprocess.Popen([sys.executable, "-c", script, str(path), str(compression)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    reader = FileReader(str(path))
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        reader.refresh()
        seen = 0
        deadline = time.monotonic() + WAIT
        while True:
            assert time.monotonic() < deadline
            done = writer.poll() is not None
            reader.refresh(force=done)
            n = reader.trees[STREAM].num_entries
            if n > seen:
                got = reader.read(STREAM, ["evt", "stamp"], seen, n)
                assert got["evt"].to_list() == list(range(seen, n))
                assert got["stamp"].to_list() == [0.5 * e for e in range(seen, n)]
                seen = n
            if done:
                break
    finally:
        reader.close()
        writer.kill()
        writer.wait()
    assert seen == 600


# --------------------------------------------------------------------------- falling back


def open_tree(path: Path, **kw):
    f = uproot.recreate(str(path))
    return f, f.mktree(STREAM, TYPES, **kw)


def append(f, tree, first: int, n: int) -> None:
    """``n`` more records, written through to the file."""
    tree.extend(records(first, n))
    f.file.sink.flush()


@contextlib.contextmanager
def growing(path: Path, first: int = 10, **kw):
    """A file with ``first`` records still open for writing, and a reader that has parsed it once:
    (file, tree, reader), both closed at the end."""
    f, tree = open_tree(path, **kw)
    reader = None
    try:
        append(f, tree, 0, first)
        reader = Counting(str(path))
        reader.refresh()
        yield f, tree, reader
    finally:
        if reader is not None:
            reader.close()
        f.close()


def check(reader: FileReader, path: Path) -> int:
    """The reader's entries and values equal a fresh uproot read; its entry count."""
    n = reader.trees[STREAM].num_entries
    tree = uproot.open(path)[STREAM]
    assert n == tree.num_entries
    got = reader.read(STREAM, BRANCHES, 0, n)
    assert ak.array_equal(got[tree.keys()], tree.arrays())
    return n


def test_growth_is_read_in_place_without_parsing_the_file_again(tmp_path):
    path = tmp_path / "f.root"
    with growing(path, 5, initial_basket_capacity=1000) as (f, tree, reader):
        for i in range(1, 80):
            append(f, tree, 5 * i, 5)
            assert reader.refresh()
            assert reader.trees[STREAM].num_entries == 5 * (i + 1)
        assert reader.parses == 1
        assert check(reader, path) == 400
        assert not reader.refresh()  # nothing new
        assert reader.offsets(STREAM) == list(range(0, 401, 5))


def test_a_tree_that_outgrows_its_basket_slots_moves_and_is_parsed_again(tmp_path):
    path = tmp_path / "f.root"
    with growing(path, 3, initial_basket_capacity=4, resize_factor=2) as (f, tree, reader):
        for i in range(1, 40):
            append(f, tree, 3 * i, 3)
            reader.refresh()
            assert check(reader, path) == 3 * (i + 1)
        assert 2 < reader.parses < 20  # once per move, not once per append
        assert reader._follower is not None


def test_a_new_cycle_of_the_tree_is_read_from_the_new_cycle(tmp_path):
    with growing(tmp_path / "f.root") as (f, tree, reader):
        f[STREAM] = records(100, 30)  # a second cycle, as a new AutoSave writes one
        f.file.sink.flush()
        assert reader.refresh()
        assert reader.parses == 2
        assert reader.read(STREAM, ["evt"], 0, 30)["evt"].to_list() == list(range(100, 130))


def test_a_stream_that_appears_is_found(tmp_path):
    path = tmp_path / "f.root"
    with growing(path) as (f, tree, reader):
        other = f.mktree("Other", {"x": np.int32})
        other.extend({"x": np.arange(4, dtype=np.int32)})
        append(f, tree, 10, 10)
        assert reader.refresh()
        assert set(reader.trees) == {STREAM, "Other"}
        assert reader.read("Other", ["x"], 0, 4)["x"].to_list() == [0, 1, 2, 3]
        assert check(reader, path) == 20


@pytest.mark.parametrize("how", ["replaced", "recreated in place", "truncated"])
def test_a_file_replaced_or_shrunk_is_parsed_again(tmp_path, how):
    path = tmp_path / "f.root"
    f, tree = open_tree(path)
    for i in range(20):
        tree.extend(records(10 * i, 10))
    f.close()
    reader = Counting(str(path))
    try:
        reader.refresh()
        assert reader._follower is not None
        if how == "truncated":
            os.truncate(path, os.path.getsize(path) // 2)
            try:
                reader.refresh()
            except tail.Unreadable:
                pass
            assert reader.parses >= 2 and STREAM not in reader.trees  # what the full parse makes of it
            return
        target = tmp_path / "new.root" if how == "replaced" else path
        g, other = open_tree(target)
        for i in range(40):  # more than before: a file that grew, to a stat
            other.extend(records(1000 + 7 * i, 7))
        g.close()
        if how == "replaced":
            os.replace(target, path)
        assert reader.refresh(force=False)
        assert reader.parses == 2
        assert check(reader, path) == 280
        assert reader.read(STREAM, ["evt"], 0, 1)["evt"].to_list() == [1000]
    finally:
        reader.close()


def test_a_follower_that_meets_garbage_parses_the_file_again(tmp_path):
    path = tmp_path / "f.root"
    with growing(path) as (f, tree, reader):
        follower = reader._follower
        assert follower is not None
        t = follower.trees[STREAM]
        append(f, tree, 10, 10)
        with open(path, "r+b") as raw:  # a branch's counters no longer say what the tree says
            raw.seek(t.branches[0].head2 + 12)  # its fEntries (after fOffset, fMaxBaskets, fSplitLevel)
            raw.write(b"\xff" * 8)
        with pytest.raises(incremental.Torn):
            follower.poll()
        try:
            reader.refresh()  # gives up on the follower; the full parse cannot read the branch either
        except tail.Unreadable:
            pass
        assert reader.parses >= 2


def test_reading_through_a_window_of_baskets_equals_reading_the_branch(tmp_path):
    path = tmp_path / "f.root"
    f, tree = open_tree(path)
    for i in range(300):
        tree.extend(records(3 * i, 3))
    f.close()
    t = uproot.open(path)[STREAM]
    for name in BRANCHES:
        branch = t[name]
        for start, stop in ((0, 0), (0, 1), (5, 17), (880, 900), (899, 900), (900, 900), (100, 700)):
            view, first = baskets.window(branch, start, stop)
            got = view.array(entry_start=start - first, entry_stop=stop - first, library="ak")
            assert ak.array_equal(got, branch.array(entry_start=start, entry_stop=stop, library="ak")), (name, start)
    assert baskets.window(t["evt"], 0, 900)[1] == 0  # most baskets: the branch itself


def test_the_full_parse_on_every_change_can_be_forced(tmp_path, monkeypatch):
    monkeypatch.setattr(tail, "FOLLOW", False)
    path = tmp_path / "f.root"
    with growing(path) as (f, tree, reader):
        assert reader._follower is None
        append(f, tree, 10, 10)
        assert reader.refresh()
        assert reader.parses == 2
        assert check(reader, path) == 20


# --------------------------------------------------------------------------- end to end


def test_every_record_of_a_growing_file_arrives_once_through_the_server(data_dir, server_factory):
    path = data_dir / "F00000001_0001.mdaq.root"
    writer = start_writer(path, 400, pause=0.002)
    server = server_factory(data_dir)
    got: list[int] = []
    try:
        with DDSClient(server.host, server.port, connect_timeout=WAIT) as client:
            client.subscribe(Subscription(streams=[STREAM], keep_up="all", start="oldest"))
            deadline = time.monotonic() + 2 * WAIT
            total = None
            while total is None or len(got) < total:
                assert time.monotonic() < deadline, f"{len(got)} records arrived"
                if total is None and writer.poll() is not None:
                    total = int(writer.stdout.read().split()[-1])
                try:
                    batch = client.next_batch(max_records=97, timeout=0.5)
                except DDSTimeout:  # all read, the writer still exiting
                    continue
                got.extend(batch.arrays["evt"].to_list())
                assert batch.arrays["tag"].to_list() == [f"t{x % 7}" * (x % 3) for x in batch.arrays["evt"].to_list()]
    finally:
        writer.kill()
        writer.wait()
    assert got == list(range(total))
