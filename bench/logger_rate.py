"""The data logger's sustained rate against ``next_batch`` alone, in the same run on the same server.

    python -m bench.logger_rate [--records N] [--quick]

Source: three closed files of a MINOS-like stream (``evt kind energy nhits x`` and a
jagged ``adc`` list, 0-7 values). ``next_batch`` alone: a DDSClient reads every
record (``keep_up="all"``, 5000 per batch) and does nothing with them. Logger: a
``ddslogger`` process on the same server writes every record to rotated ROOT
files (200 MB, the default), checkpointing each second, with the event directory
keyed on ``evt``; its sustained rate is taken between its first and its last
checkpoint seen in the journal (process start-up left out, shown apart). Each
figure is the best of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from bench.common import BIN, STREAM, flat_columns
from clients import DDSClient, Subscription
from dispatcher.testing import ServerProc

FILES = 3
BATCH = 5000


def write_source(data_dir: Path, records: int) -> None:
    per_file = records // FILES
    for i in range(FILES):
        cols = {k: ak.Array(v) for k, v in flat_columns(i * per_file, per_file).items()}
        counts = np.random.default_rng(i).integers(0, 8, per_file)
        cols["adc"] = ak.unflatten(np.random.default_rng(i).random(int(counts.sum())), counts)
        with uproot.recreate(data_dir / f"F00000099_{i:04d}.root") as f:
            f.mktree(STREAM, {k: v.type.content for k, v in cols.items()})
            for a in range(0, per_file, 50_000):
                f[STREAM].extend({k: v[a:a + 50_000] for k, v in cols.items()})


def next_batch_alone(server: ServerProc, total: int) -> float:
    """Seconds ``next_batch`` takes to receive ``total`` records."""
    with DDSClient(server.host, server.port) as dds:
        dds.subscribe(Subscription(streams=[STREAM], keep_up="all", start="oldest"))
        t0 = time.perf_counter()
        got = 0
        while got < total:
            got += len(dds.next_batch(max_records=BATCH, timeout=30))
        return time.perf_counter() - t0


def _events(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        if not con.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchone():
            return 0
        return con.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        con.close()


def logger_run(server: ServerProc, outdir: Path, total: int) -> tuple[float, float, float]:
    """(sustained records/s, seconds from start to the last record, seconds to the first checkpoint)."""
    exe = BIN / "ddslogger"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "clients.logger"]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*cmd, "-H", server.host, "-p", str(server.port), "--stream", STREAM, "--key", "evt",
                             "-o", str(outdir), "--batch-records", str(BATCH), "-l", "Warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = outdir / "ddslogger.db"
    first: tuple[float, int] | None = None
    try:
        deadline = t0 + 600
        while time.perf_counter() < deadline:
            n = _events(db)
            now = time.perf_counter()
            if n and first is None:
                first = (now, n)
            if n >= total:
                break
            time.sleep(0.02)
        else:
            raise RuntimeError(f"ddslogger logged {n} of {total} records in 600 s")
    finally:
        proc.terminate()
        proc.wait(60)
    assert first is not None
    if first[1] >= total:  # all of it before the first checkpoint: start-up included
        return total / (now - t0), now - t0, first[0] - t0
    sustained = (total - first[1]) / max(now - first[0], 1e-9)
    return sustained, now - t0, first[0] - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.logger_rate", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=600_000, help="records in the source (default 600000)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each measurement; the best counts (default 2)")
    p.add_argument("--quick", action="store_true", help="60000 records, one run")
    a = p.parse_args(argv)
    records, repeats = (60_000, 1) if a.quick else (a.records, a.repeats)
    total = records // FILES * FILES
    with tempfile.TemporaryDirectory(prefix="dds-logger-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        write_source(data_dir, records)
        with ServerProc(data_dir) as server:
            alone = min(next_batch_alone(server, total) for _ in range(repeats))
            runs = [logger_run(server, Path(tmp) / f"out{i}", total) for i in range(repeats)]
            written = sum(f.stat().st_size for f in (Path(tmp) / "out0").glob("*.root"))
    best = max(runs, key=lambda r: r[0])
    print(f"# ddslogger rate: {total} records ({STREAM}: 5 numbers and a jagged adc list), best of {repeats}\n")
    print("| reader | records/s | seconds | note |")
    print("|---|---:|---:|---|")
    print(f"| next_batch alone (5000 per batch) | {total / alone:,.0f} | {alone:.2f} | receives, keeps nothing |")
    print(f"| ddslogger, sustained | {best[0]:,.0f} | {best[1]:.2f} | writes {written / 1e6:.1f} MB of ROOT files, "
          f"event directory, checkpoint each second "
          f"(a run shorter than one checkpoint counts its start-up); first checkpoint {best[2]:.2f} s after start |")
    print(f"\nlogger / next_batch alone: {best[0] / (total / alone):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
