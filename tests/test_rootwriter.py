"""DDS against files written by ROOT itself, as a real DAQ writes them.

Every ROOT writer here runs in its own process (``ddsdaqsim --writer root``, or a
scripted DaqSimulator), so a crash inside ROOT cannot take pytest down, while a
real ``ddsparentserver`` serves the files. What DDS served is compared, value for
value, with what uproot reads from the finished files.

ROOT's TTree writer makes entries readable only at ``AutoSave("SaveSelf")``, which
rewrites the tree's key (a new cycle) and the file's key list: readers meet
missing keys on the way, which the server must retry, never serving a torn read.
An RNTuple written by ``RNTupleWriter`` is not readable at all until committed.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import awkward as ak
import pytest
import uproot

from clients import DDSClient, DDSError, DDSTimeout, MessageType, Subscription
from conftest import BIN, ROOT, Server
from corpus import same_array

STREAMS = ("DaqSnarl", "DaqMonitor", "DcsMonitor")
#: every wait in this file ends within this many seconds
WAIT = 20.0
START = 1_700_000_000.0


def assert_same(served: ak.Array, expected: ak.Array, what: str) -> None:
    assert sorted(served.fields) == sorted(expected.fields), what
    for f in expected.fields:
        assert same_array(served[f], expected[f]), f"{what}: branch {f} differs"


# ------------------------------------------------------------- one ddsdaqsim --writer root run, read live


class LiveRun:
    """What two clients received while ``ddsdaqsim --writer root`` wrote rotating files."""

    def __init__(self, data_dir: Path, server: Server):
        self.data_dir = data_dir
        self.batches: list = []  # (file, stream, entries, arrays) in arrival order, keep_up="all"
        self.newest: list = []  # (file, entry, record) in arrival order, keep_up="record"
        self.errors: list = []
        self.all_client = DDSClient(server.host, server.port, connect_timeout=WAIT)
        self.all_client.subscribe(Subscription(streams=STREAMS, keep_up="all"))
        self.record_client = DDSClient(server.host, server.port, connect_timeout=WAIT)
        self.record_client.subscribe(Subscription(streams=("DaqSnarl",), keep_up="record"))
        self.writer = subprocess.Popen(
            [str(BIN / "ddsdaqsim"), "-d", str(data_dir), "--writer", "root", "--seconds", "3",
             "--seconds-per-file", "1", "--autosave", "50", "--autosave-seconds", "0.2",
             "--monitor-rate", "10", "--dcs-rate", "5", "--run", "7"],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.stderr = ""

    def _read(self, fetch) -> None:
        deadline = time.monotonic() + 3 * WAIT
        try:
            while time.monotonic() < deadline:
                try:
                    fetch()
                except DDSTimeout:
                    if self.writer.poll() is not None:
                        return  # the writer is done and nothing came for a while
        except BaseException as exc:  # noqa: BLE001 -- handed to the test
            self.errors.append(exc)

    def _all(self) -> None:
        b = self.all_client.next_batch(max_records=500, timeout=1.5)
        self.batches.append((b.file, b.stream, b.entries.tolist(), b.arrays))

    def _record(self) -> None:
        rs = self.record_client.next(timeout=1.5)
        self.newest.append((rs.file, rs.entries["DaqSnarl"], rs["DaqSnarl"]))
        time.sleep(0.02)  # a display's pace: the DAQ moves on between requests

    def run(self) -> None:
        threads = [threading.Thread(target=self._read, args=(f,), daemon=True) for f in (self._all, self._record)]
        for t in threads:
            t.start()
        try:
            _, self.stderr = self.writer.communicate(timeout=3 * WAIT)
        finally:
            for t in threads:
                t.join(4 * WAIT)
            self.close()

    def close(self) -> None:
        if self.writer.poll() is None:
            self.writer.kill()
            self.writer.communicate()
        self.all_client.close()
        self.record_client.close()

    def files(self) -> list[str]:
        return sorted(n for n in os.listdir(self.data_dir) if n.endswith(".root"))


def live_run(data_dir: Path, server: Server) -> LiveRun:
    run = LiveRun(data_dir, server)
    try:
        run.run()
    finally:
        run.close()
    assert not run.errors, run.errors
    assert run.writer.returncode == 0, run.stderr
    return run


def test_ddsdaqsim_writing_with_root_is_served_live_as_written(data_dir, server):
    # one writer run (ROOT's start costs seconds) read by an all-mode and a record-mode client
    run = live_run(data_dir, server)
    assert "writer: ROOT 6." in run.stderr
    assert "AutoSave every 50 entries or 0.2 s" in run.stderr
    check_all_mode_served_every_record_once_in_order_as_uproot_reads_it(run)
    check_record_mode_never_went_back_and_served_what_root_wrote(run)
    assert "Traceback" not in server.log


def check_all_mode_served_every_record_once_in_order_as_uproot_reads_it(run: LiveRun) -> None:
    names = run.files()
    assert len(names) >= 3  # rotations between ROOT-written files
    order = [f for f, *_ in run.batches]
    assert order == sorted(order), "a file was served after a later one"
    for name in names:
        with uproot.open(run.data_dir / name) as f:
            for stream in STREAMS:
                parts = [(e, a) for fn, s, e, a in run.batches if fn == name and s == stream]
                expected = f[stream].arrays(library="ak")
                entries = [i for e, _ in parts for i in e]
                assert entries == list(range(len(expected))), f"{name} {stream}: entries"
                if parts:
                    assert_same(ak.concatenate([a for _, a in parts]), expected, f"{name} {stream}")
    served = ak.concatenate([a for _, s, _, a in run.batches if s == "DaqSnarl"])
    assert served.snarl.tolist() == list(range(len(served)))  # contiguous over the run and its files
    assert set(served.trigger.tolist()) <= {"plane", "energy", "spill", "light-injection", "null"}
    assert ak.all(ak.num(served.plane) == served.nhits)
    dcs = ak.concatenate([a for _, s, _, a in run.batches if s == "DcsMonitor"])
    assert {"temp_rack", "temp_hall", "hv"} <= set(dcs.fields)  # the split object's members


def check_record_mode_never_went_back_and_served_what_root_wrote(run: LiveRun) -> None:
    got = run.newest
    assert len(got) >= 5
    positions = [(f, e) for f, e, _ in got]
    assert positions == sorted(set(positions)), "record mode went back or repeated a record"
    by_file: dict[str, ak.Array] = {}
    for name, entry, record in got:
        if name not in by_file:
            by_file[name] = uproot.open(run.data_dir / name)["DaqSnarl"].arrays(library="ak")
        assert ak.to_list(by_file[name][entry]) == {k: record[k] for k in by_file[name].fields}, (name, entry)
    assert got[-1][0] == run.files()[-1]


# ------------------------------------------------------------- a scripted ROOT writer, step by step

DRIVER = r"""
import json, os, sys
from demo.daqsim import DaqSimulator
args = json.loads(sys.argv[1])
data_dir = args.pop("data_dir")
sim = DaqSimulator(data_dir, writer="root", **args)

def state():
    return {"file": sim.current_file, "entries": sim._current.entries, "saved": sim.saved_entries,
            "visible": sorted(n for n in os.listdir(data_dir) if n.endswith(".root"))}

print(json.dumps(state()), flush=True)
for line in sys.stdin:
    cmd, *rest = line.split()
    if cmd == "steps":
        for _ in range(int(rest[0])):
            sim.step()
    elif cmd == "close":
        sim.close()
        print(json.dumps({"written": sim.written}), flush=True)
        break
    print(json.dumps(state()), flush=True)
"""


class ScriptedWriter:
    """A DaqSimulator writing with ROOT in its own process, one command at a time."""

    def __init__(self, data_dir: Path, **args):
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps({"data_dir": str(data_dir), **args})],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.state = self._answer()

    def _answer(self) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT)
        line = self.proc.stdout.readline() if ready else ""
        assert line, f"the ROOT writer did not answer (exit status {self.proc.poll()})"
        return json.loads(line)

    def send(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self.state = self._answer()
        return self.state

    def step_until(self, done, most: int = 2000) -> dict:
        for _ in range(most):
            if done(self.send("steps 1")):
                return self.state
        raise AssertionError(f"not reached in {most} steps: {self.state}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


@pytest.fixture
def scripted(data_dir):
    made = []

    def make(**args):
        made.append(ScriptedWriter(data_dir, start_time=START, seconds_per_file=None, **args))
        return made[-1]

    yield make
    for w in made:
        w.stop()


def test_record_mode_serves_the_newest_autosaved_entry_and_all_mode_nothing_unsaved(data_dir, server, scripted):
    w = scripted(autosave=100, autosave_seconds=1e6, monitor_rate=0.0, dcs_rate=0.0)
    # the first step's records are saved at once (the file appears with them); then every 100 entries
    s = w.step_until(lambda s: s["saved"]["DaqSnarl"] >= 100 and s["entries"]["DaqSnarl"] > s["saved"]["DaqSnarl"])
    saved = s["saved"]["DaqSnarl"]
    assert s["visible"] == [s["file"]]
    with DDSClient(server.host, server.port) as newest, DDSClient(server.host, server.port) as every:
        newest.subscribe(Subscription(streams=("DaqSnarl",), keep_up="record"))
        every.subscribe(Subscription(streams=("DaqSnarl",), keep_up="all"))
        assert newest.next(timeout=WAIT).entries["DaqSnarl"] == saved - 1
        got = []
        while len(got) < saved:
            got.extend(every.next_batch(max_records=1000, timeout=WAIT).entries.tolist())
        assert got == list(range(saved))
        with pytest.raises(DDSTimeout):  # filled but not AutoSaved: not on disk, not served
            every.next_batch(timeout=0.5)
        with pytest.raises(DDSTimeout):
            newest.next(timeout=0.3)
        s = w.step_until(lambda s: s["saved"]["DaqSnarl"] > saved)
        assert newest.next(timeout=WAIT).entries["DaqSnarl"] == s["saved"]["DaqSnarl"] - 1
        b = every.next_batch(max_records=1000, timeout=WAIT)
        assert b.entries.tolist() == list(range(saved, s["saved"]["DaqSnarl"]))
        w.send("close")
        expected = uproot.open(data_dir / s["file"])["DaqSnarl"].arrays(library="ak")
        assert_same(b.arrays, expected[saved:s["saved"]["DaqSnarl"]], "DaqSnarl after the second AutoSave")


def test_rntuple_file_is_served_once_committed_and_the_wait_is_logged(data_dir, server, scripted):
    w = scripted(file_format="rntuple", autosave=20, autosave_seconds=0.5, monitor_rate=5.0, dcs_rate=2.0)
    s = w.step_until(lambda s: bool(s["visible"]))  # the file is there with its first cluster, not committed
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=STREAMS, keep_up="all", start="oldest"))
        with pytest.raises(DDSError) as info:
            c.next_batch(timeout=0.5)
        assert info.value.message_type == MessageType.TIMEOUT
        assert f"file {s['file']} holds no stream yet" in server.log
        w.send("steps 40")
        written = w.send("close")["written"][s["file"]]  # the RNTuples are committed: now readable
        got: dict[str, list] = {st: [] for st in STREAMS}
        deadline = time.monotonic() + WAIT
        while any(sum(len(a) for a in got[st]) < written[st] for st in STREAMS):
            assert time.monotonic() < deadline, {st: sum(len(a) for a in got[st]) for st in STREAMS}
            b = c.next_batch(max_records=1000, timeout=WAIT)
            got[b.stream].append(b.arrays)
    with uproot.open(data_dir / s["file"]) as f:
        for st in STREAMS:
            assert f[st].num_entries == written[st] > 0
            assert_same(ak.concatenate(got[st]), f[st].arrays(library="ak"), st)
    assert f"file {s['file']} holds DaqMonitor, DaqSnarl, DcsMonitor" in server.log


# ------------------------------------------------------------- without ROOT


def without_root(*args: str) -> subprocess.CompletedProcess:
    """``ddsdaqsim ARGS`` in a process where ``import ROOT`` fails, as on a machine without ROOT."""
    code = "import sys; sys.modules['ROOT'] = None; from demo.daqsim import main; main(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=WAIT)


def test_writer_root_without_root_is_a_usage_error_with_an_install_hint(tmp_path):
    done = without_root("-d", str(tmp_path), "--seconds", "0", "--writer", "root")
    assert done.returncode == 2
    assert "--writer root: ROOT is not installed: pip install root" in done.stderr


def test_the_default_writer_is_uproot_where_root_is_missing(tmp_path):
    done = without_root("-d", str(tmp_path), "--seconds", "0.2", "--run", "3")
    assert done.returncode == 0, done.stderr
    assert "writer: uproot " in done.stderr
    assert os.listdir(tmp_path) == ["F00000003_0000.mdaq.root"]


def test_server_client_and_demo_modules_never_import_root():
    code = ("import sys, clients, clients.iterate, dispatcher.cli, dispatcher.child, dispatcher.tail, "
            "demo.daqsim, demo.rootwriter, demo.run; print('ROOT' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=WAIT)
    assert done.stdout.strip() == "False", done.stderr
