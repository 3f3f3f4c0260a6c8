"""ddslogger killed with SIGKILL and restarted logs every passing record exactly once; the archiver survives a
failing destination and deletes local files only after a verified copy; the disk guard pauses writing."""

from __future__ import annotations

import hashlib
import random
import signal
import sqlite3
import time
from collections import namedtuple

import numpy as np

from clients.logger.diskguard import DiskGuard
from conftest import snarl_data, write_file
from dispatcher.testing import wait_until
from test_logger import WAIT, events_logged, outputs, read_stream, source_passing, start_logger, stop_logger

#: SIGKILLs per run, and the seed of the moments they land
KILLS = 4
SEED = 18


def test_sigkill_at_random_moments_and_a_server_restart_still_log_every_record_exactly_once(
        tmp_path, data_dir, server_factory):
    args = ("--stream", "DaqSnarl", "--selection", "kind != 2", "--key", "evt", "--max-file-mb", "0.06",
            "--batch-records", "50", "--checkpoint-seconds", "0.05")
    outdir = tmp_path / "out"
    rng = random.Random(SEED)
    server = server_factory(data_dir)
    at_kill = []
    truncated = False
    for k in range(KILLS):
        # the DAQ writes a file while the logger is down; the logger is killed while logging it
        write_file(data_dir / f"F00000050_{k:04d}.root", {"DaqSnarl": snarl_data(3000 * k, 3000)}, steps=4)
        if k == 2:  # the server restarts too (a new port): the restarted logger resumes on the new one
            server.stop()
            server = server_factory(data_dir)
        before = events_logged(outdir)
        proc = start_logger(server, outdir, *args)
        try:
            wait_until(lambda b=before, p=proc: events_logged(outdir) > b or p.poll() is not None, timeout=30,
                       what="the logger to log more")
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            stop_logger(proc, signal.SIGKILL)
        at_kill.append(events_logged(outdir))
        parts = sorted(outdir.glob(".*.part"))
        if parts and not truncated:  # a part file torn beyond reading: rebuilt from the source
            with open(parts[-1], "r+b") as f:
                f.truncate(64)
            truncated = True
    write_file(data_dir / f"F00000050_{KILLS:04d}.root", {"DaqSnarl": snarl_data(3000 * KILLS, 3000)}, steps=4)
    want = source_passing(data_dir, "DaqSnarl", lambda a: a.kind != 2)
    proc = start_logger(server, outdir, *args)
    try:
        wait_until(lambda: events_logged(outdir) == len(want), timeout=60, what="every record logged")
    finally:
        assert stop_logger(proc) == 0
    assert truncated, "a kill left an open part file"
    got = read_stream(outputs(outdir), "DaqSnarl")
    evts = got.evt.to_list()
    print(f"records in the journal at each of {KILLS} kills: {at_kill} of {len(want)}; duplicates "
          f"{len(evts) - len(set(evts))}, missing {len(set(want.evt.to_list()) - set(evts))}")
    assert len(evts) == len(set(evts)), "a record was logged twice"
    assert evts == want.evt.to_list(), "records missing or out of order"
    assert np.allclose(got.energy.to_numpy(), want.energy.to_numpy())
    assert not list(outdir.glob(".*.part"))
    con = sqlite3.connect(outdir / "ddslogger.db")
    try:
        rows = con.execute("SELECT key, output, output_entry FROM events ORDER BY output, output_entry").fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == evts, "the event directory lists each record once, where it is"


def test_archive_retries_a_failing_destination_and_deletes_only_verified_copies(tmp_path, data_dir, server):
    for i in range(2):
        write_file(data_dir / f"F00000060_{i:04d}.root", {"DaqSnarl": snarl_data(2000 * i, 2000)})
    blocker = tmp_path / "tape"
    blocker.write_text("not a directory: the archive destination fails until this is removed")
    archive = blocker / "archive"
    outdir = tmp_path / "out"
    log_path = tmp_path / "archive.log"
    proc = start_logger(server, outdir, "--stream", "DaqSnarl", "--max-file-mb", "0.02", "--batch-records", "500",
                        "--archive", str(archive), "--delete-after-archive", "--archive-max-backoff", "0.3",
                        log_path=log_path)
    try:
        wait_until(lambda: events_logged(outdir) == 4000, WAIT, what="every record logged")
        wait_until(lambda: log_path.read_text().count("failed, will retry") >= 3, WAIT, what="archive retries")
        failing = [p.name for p in outputs(outdir)]
        assert len(failing) >= 2, "closed files wait locally while the archive fails"
        blocker.unlink()  # the destination recovers
        wait_until(lambda: not outputs(outdir), WAIT, what="every archived file deleted locally")
    finally:
        assert stop_logger(proc) == 0
    archived = sorted(p.name for p in archive.iterdir())
    assert set(failing) <= set(archived)
    assert all(name.endswith(".root") for name in archived)  # no temporary copy left
    con = sqlite3.connect(outdir / "ddslogger.db")
    try:
        done = con.execute("SELECT name, sha256, archived, deleted FROM outputs WHERE status = 'closed'").fetchall()
    finally:
        con.close()
    assert sorted(r[0] for r in done) == archived  # every closed file archived once, the last one at the stop
    assert all(r[2] == 1 and r[3] == 1 for r in done) and not outputs(outdir)
    for name, sha, _, _ in done:
        assert hashlib.sha256((archive / name).read_bytes()).hexdigest() == sha
    assert read_stream(sorted(archive.glob("*.root")), "DaqSnarl").evt.to_list() == list(range(4000))
    log = log_path.read_text()
    first_delete = log.index("deleted local")
    assert log.index("archived ") < first_delete and "Not a directory" in log[:first_delete]


Usage = namedtuple("Usage", "total used free")


def test_disk_guard_pauses_while_the_disk_is_too_full_and_resumes_below(caplog):
    fullness = [95, 95, 91, 80]
    slept = []
    guard = DiskGuard("/data", 90.0, usage=lambda path: Usage(100, fullness.pop(0) if len(fullness) > 1 else 80, 0),
                      sleep=slept.append, interval=2.0)
    with caplog.at_level("WARNING", logger="ddslogger"):
        guard.wait(lambda: False)
    assert slept == [2.0, 2.0, 2.0] and guard.pauses == 1
    assert "95.0% full (--max-disk-percent 90): writing paused" in caplog.text
    assert "writing resumes" in caplog.text
    DiskGuard("/data", 90.0, usage=lambda path: Usage(100, 10, 90), sleep=slept.append).wait(lambda: False)
    assert len(slept) == 3  # room: no pause
    stopped = DiskGuard("/data", 50.0, usage=lambda path: Usage(100, 99, 1), sleep=slept.append)
    stopped.wait(lambda: True)  # a stop ends the pause
    assert stopped.pauses == 1
