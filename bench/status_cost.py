"""What the children's status reports cost: throughput with and without them, in one run.

    python -m bench.status_cost [--records N] [--repeats R] [--quick]

Two servers on the same closed file, one with status reports (the default) and
one started with the hidden ``--no-status-reports`` (no channel, no datagrams;
the counting behind the session-end log line stays). A client reads every record
(``keep_up="all"``) three ways: ``next_batch`` of 10,000 (few big replies),
``next_batch`` of 100 (many small replies: the worst case for a per-reply cost)
and ``next()`` with the default prefetch of 256. Runs alternate between the two
servers; each figure is the best of ``--repeats``. Target: with / without >= 0.99.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.common import STREAM, write_flat
from clients import DDSClient, Subscription
from dispatcher.testing import ServerProc

FILE = "F00000001_0000.mdaq.root"


def read_all(server: ServerProc, total: int, how: str) -> float:
    """Seconds to read ``total`` records from the start."""
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=[STREAM], keep_up="all", start="oldest"))
        t0 = time.perf_counter()
        got = 0
        while got < total:
            if how == "next":
                c.next(timeout=10)
                got += 1
            else:
                got += len(c.next_batch(int(how), timeout=10))
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.status_cost", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1_000_000, help="records in the file (default 1000000)")
    p.add_argument("--repeats", type=int, default=7, help="runs of each measurement; the best counts (default 7)")
    p.add_argument("--quick", action="store_true", help="200000 records, 3 runs")
    a = p.parse_args(argv)
    records, repeats = (200_000, 3) if a.quick else (a.records, a.repeats)
    ways = {"10000": records, "100": records // 5, "next": records // 10}
    best: dict[tuple[str, bool], float] = {}
    with tempfile.TemporaryDirectory(prefix="dds-status-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        write_flat(data_dir / FILE, records)
        with ServerProc(data_dir) as on, ServerProc(data_dir, "--no-status-reports") as off:
            for how, total in ways.items():
                read_all(on, total, how)  # warm the page cache and both servers
                read_all(off, total, how)
                for _ in range(repeats):
                    for reports, server in ((True, on), (False, off)):
                        s = read_all(server, total, how)
                        best[how, reports] = min(best.get((how, reports), s), s)
    print(f"# status reports: throughput with and without, {records} records of {STREAM} (5 numbers), "
          f"best of {repeats}, alternating\n")
    print("| reader | records | with reports (records/s) | without (records/s) | with / without |")
    print("|---|---:|---:|---:|---:|")
    names = {"10000": "next_batch(10000)", "100": "next_batch(100)", "next": "next(), prefetch 256"}
    worst = 1e9
    for how, total in ways.items():
        with_, without = total / best[how, True], total / best[how, False]
        worst = min(worst, with_ / without)
        print(f"| {names[how]} | {total} | {with_:,.0f} | {without:,.0f} | {with_ / without:.3f} |")
    print(f"\nworst ratio: {worst:.3f} (target >= 0.99: {'yes' if worst >= 0.99 else 'no'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
