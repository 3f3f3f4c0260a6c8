"""ddslogger against a real ddsparentserver: the output holds what passes the cut, rotates, chains, finds events."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from clients import DDSClient, DDSTimeout, Subscription
from conftest import BIN, snarl_data, write_file
from dispatcher.testing import wait_until

LOGGER_STOP_SECONDS = 20
#: seconds a test waits for the logger to get somewhere
WAIT = 30.0


def logger_command() -> list[str]:
    exe = BIN / "ddslogger"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "clients.logger"]


def start_logger(server, outdir, *args: str, log_path: Path | None = None) -> subprocess.Popen:
    """A ddslogger process on ``server``; its log goes to ``log_path`` (default OUTDIR/../ddslogger.log)."""
    log_path = log_path or Path(outdir).parent / "ddslogger.log"
    with open(log_path, "ab") as log:
        return subprocess.Popen([*logger_command(), "-H", server.host, "-p", str(server.port), "-o", str(outdir),
                                 "-l", "Debug", *args], stdout=subprocess.DEVNULL, stderr=log)


def stop_logger(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """End a logger (SIGTERM: graceful; SIGKILL: a crash); returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(LOGGER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def events_logged(outdir) -> int:
    """Rows in the event directory (0 before the journal exists)."""
    db = Path(outdir) / "ddslogger.db"
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)  # not read-only: a reader after a kill rolls back its hot journal
    try:
        if not con.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchone():
            return 0  # the schema is not made yet
        return con.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        con.close()


def outputs(outdir) -> list[Path]:
    return sorted(Path(outdir).glob("*.root"))


def read_stream(files, stream: str) -> ak.Array:
    parts = [uproot.open(f)[stream].arrays() for f in files if stream in uproot.open(f)]
    return ak.concatenate(parts) if parts else ak.Array([])


def rich_file(path, first: int, n: int) -> None:
    """A source file with numbers, a jagged list, strings, a fixed-size array and a stream in a directory."""
    snarl = snarl_data(first, n)
    snarl["adc"] = ak.Array([[float(first + i)] * (i % 4) for i in range(n)])
    snarl["label"] = ak.Array([f"evt{first + i}" for i in range(n)])
    snarl["pos"] = np.arange(3 * n, dtype=np.float32).reshape(n, 3) + first
    monitor = {"evt": np.arange(first, first + n, 50, dtype=np.int64), "rate": np.linspace(1, 2, len(range(0, n, 50)))}
    with uproot.recreate(path) as f:
        for stream, branches in (("DaqSnarl", snarl), ("mon/Rate", monitor)):
            arrays = {k: ak.Array(v) for k, v in branches.items()}
            f.mktree(stream, {k: v.type.content for k, v in arrays.items()})
            size = len(arrays["evt"])
            for a, b in ((0, size // 2), (size // 2, size)):  # appended in two steps, as a DAQ does
                f[stream].extend({k: v[a:b] for k, v in arrays.items()})


def source_passing(data_dir, stream: str, cut=None) -> ak.Array:
    arrays = read_stream(sorted(Path(data_dir).glob("*.root")), stream)
    return arrays[cut(arrays)] if cut else arrays


def assert_same_records(got: ak.Array, want: ak.Array) -> None:
    assert len(got) == len(want)
    for field in want.fields:
        assert field in got.fields, f"branch {field} missing from the output"
        assert ak.to_list(got[field]) == ak.to_list(want[field]), f"branch {field} differs"


def test_output_equals_input_passing_the_cut_rotated_by_size_found_and_served_again(tmp_path, data_dir,
                                                                                    server_factory):
    for i in range(3):
        rich_file(data_dir / f"F00000042_{i:04d}.root", 1000 * i, 1000)
    server = server_factory(data_dir)
    outdir = tmp_path / "out"
    proc = start_logger(server, outdir, "--stream", "DaqSnarl", "--stream", "mon/Rate",
                        "--selection", "DaqSnarl:kind != 1 && nhits > 25", "--key", "evt",
                        "--max-file-mb", "0.04", "--batch-records", "400")
    want = source_passing(data_dir, "DaqSnarl", lambda a: (a.kind != 1) & (a.nhits > 25))
    want_rate = source_passing(data_dir, "mon/Rate")
    try:
        wait_until(lambda: events_logged(outdir) == len(want) + len(want_rate), WAIT, what="every record logged")
        assert [p.name for p in outputs(outdir)] == sorted(p.name for p in outputs(outdir))
    finally:
        assert stop_logger(proc) == 0
    files = outputs(outdir)
    assert len(files) >= 3, "rotation by size"
    assert files[0].name == "L000001_00000042_0000.root"
    assert not list(outdir.glob(".*.part"))
    assert all(os.path.getsize(f) < 0.04e6 + 400 * 300 for f in files)  # at most one batch past the limit
    assert_same_records(read_stream(files, "DaqSnarl"), want)
    assert_same_records(read_stream(files, "mon/Rate"), want_rate)

    # the event directory says where an event is, and it is there
    evt = int(want.evt[len(want) // 2])
    found = subprocess.run([*logger_command(), "--find", str(evt), "-o", str(outdir)], capture_output=True,
                           text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    line = next(ln for ln in found.stdout.splitlines() if "DaqSnarl" in ln)
    name, entry = line.split(": ", 1)[1].split()[0], int(line.split(" entry ")[1].split()[0])
    assert uproot.open(outdir / name)["DaqSnarl"]["evt"].array(entry_start=entry, entry_stop=entry + 1)[0] == evt
    assert f"source F00000042_000{evt // 1000}.root entry {evt % 1000}" in line
    missing = subprocess.run([*logger_command(), "--find", "999999", "-o", str(outdir)], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 1 and "no record with key 999999" in missing.stderr

    # chaining: a ddsparentserver on the output directory serves it like a DAQ directory
    chained = server_factory(outdir)
    with DDSClient(chained.host, chained.port) as dds:
        dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        evts: list[int] = []
        for _ in range(100):
            try:
                evts.extend(dds.next_batch(max_records=5000, timeout=2).arrays.evt.to_list())
            except DDSTimeout:
                break
    assert evts == want.evt.to_list()


def test_time_rotation_closes_an_idle_file_and_the_next_source_file_goes_to_a_new_one(tmp_path, data_dir, server):
    write_file(data_dir / "F00000007_0000.root", {"DaqSnarl": snarl_data(0, 200)})
    outdir = tmp_path / "out"
    proc = start_logger(server, outdir, "--stream", "DaqSnarl", "--max-file-seconds", "0.5")
    try:
        wait_until(lambda: len(outputs(outdir)) == 1, WAIT, what="the first file closed by time")
        assert [p.name for p in outputs(outdir)] == ["L000001_00000007_0000.root"]
        write_file(data_dir / "F00000007_0001.root", {"DaqSnarl": snarl_data(200, 100)})
        wait_until(lambda: len(outputs(outdir)) == 2, WAIT, what="the second file closed by time")
        assert outputs(outdir)[1].name == "L000002_00000007_0001.root"
    finally:
        assert stop_logger(proc) == 0
    assert read_stream(outputs(outdir), "DaqSnarl").evt.to_list() == list(range(300))


def test_a_branch_the_writer_cannot_write_is_named_in_the_log_and_the_rest_is_logged(tmp_path, data_dir, server):
    nested = ak.Array([[[i, i + 1], [i]] for i in range(50)])
    with uproot.recreate(data_dir / "F00000001_0000.root") as f:
        f["Nested"] = {"evt": np.arange(50), "vv": nested}  # an RNTuple: nested lists are served
    outdir = tmp_path / "out"
    log_path = tmp_path / "nested.log"
    proc = start_logger(server, outdir, "--stream", "Nested", log_path=log_path)
    try:
        wait_until(lambda: events_logged(outdir) == 50, WAIT, what="50 records logged")
    finally:
        assert stop_logger(proc) == 0
    log = log_path.read_text()
    assert "branch 'vv' of stream Nested: uproot's TTree writer cannot write var * var * int64" in log
    assert log.count("branch 'vv'") == 1
    out = read_stream(outputs(outdir), "Nested")
    assert out.fields == ["evt"] and out.evt.to_list() == list(range(50))


def test_a_restart_with_other_options_is_refused_with_the_reason(tmp_path, data_dir, server):
    write_file(data_dir / "F00000001_0000.root", {"DaqSnarl": snarl_data(0, 20)})
    outdir = tmp_path / "out"
    proc = start_logger(server, outdir, "--stream", "DaqSnarl")
    try:
        wait_until(lambda: events_logged(outdir) == 20, WAIT, what="20 records logged")
    finally:
        assert stop_logger(proc) == 0
    again = subprocess.run([*logger_command(), "-p", str(server.port), "-o", str(outdir), "--stream", "DaqSnarl",
                            "--selection", "kind == 1"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1
    assert "was logged with" in again.stderr and "log into a new directory" in again.stderr
