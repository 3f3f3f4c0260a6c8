"""What the children's status reports cost: throughput with and without them, in one run.

    python -m bench.status_cost [--records N] [--repeats R] [--quick]

Two servers on the same closed file, one with status reports (the default) and
one started with the hidden ``--no-status-reports`` (no channel, no datagrams;
the counting behind the session-end log line stays). A client reads every record
(``keep_up="all"``) three ways: ``next_batch`` of 10,000 (few big replies),
``next_batch`` of 100 (many small replies: the worst case for a per-reply cost)
and ``next()`` with the default prefetch of 256. Runs alternate between the two
servers (which one goes first alternates too).

Two figures per reader: throughput (records per wall-clock second, the best of
``--repeats``) and the server's CPU time per record (the child's and the
parent's, from ``/proc/PID/schedstat`` in nanoseconds; the least of the
repeats, as other load only adds to it). A third figure needs no server: what
the child's reporting does per request (state changes, counting the reply, a
snapshot every half second), timed in-process over many requests, against the
server CPU time per reply. On a shared machine the wall-clock figure moves by far more than 1%
from run to run, while CPU time per record is what the reports actually add; the
target, with / without >= 0.99, is checked on both and the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import STREAM, write_flat
from clients import DDSClient, Subscription
from dispatcher.testing import ServerProc

FILE = "F00000001_0000.mdaq.root"


def cpu_ns(pid: int) -> int:
    """Nanoseconds process ``pid`` has run on a CPU (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def reporting_cost(requests: int = 200_000) -> float:
    """Microseconds the child's reporting adds per request (a 100-record reply), in-process."""
    from dispatcher import status
    from dispatcher.protocol import Data

    mine, theirs = status.channel()
    reply = Data(header={"parts": [{"stream": STREAM, "file": FILE, "length": 100, "sizes": [800, 400, 800, 400, 800],
                                    "lag": 5, "age": [[99, 0.5]]}]})
    with mine, theirs:
        r = status.Reporter(theirs, "127.0.0.1:1")
        t0 = time.perf_counter()
        for i in range(requests):
            r.set_state(status.READING)
            r.set_state(status.SENDING)
            r.sent(reply, 3300)
            r.set_state(status.IDLE)
            r.tick()  # the idle wait's tick
            if i % 1000 == 0:  # the parent's reads (not the child's cost)
                try:
                    while mine.recv(65536):
                        pass
                except BlockingIOError:
                    pass
        return (time.perf_counter() - t0) / requests * 1e6


def read_all(server: ServerProc, total: int, how: str) -> tuple[float, float]:
    """(wall seconds, server CPU seconds) to read ``total`` records from the start."""
    before = set(server.children())
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=[STREAM], keep_up="all", start="oldest"))
        child = next(iter(set(server.children()) - before), None)
        cpu0 = (cpu_ns(child) if child else 0) + cpu_ns(server.pid)
        t0 = time.perf_counter()
        got = 0
        while got < total:
            if how == "next":
                c.next(timeout=10)
                got += 1
            else:
                got += len(c.next_batch(int(how), timeout=10))
        wall = time.perf_counter() - t0
        cpu = (cpu_ns(child) if child else 0) + cpu_ns(server.pid) - cpu0
    return wall, cpu / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.status_cost", description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1_000_000, help="records in the file (default 1000000)")
    p.add_argument("--repeats", type=int, default=15, help="runs of each measurement (default 15)")
    p.add_argument("--quick", action="store_true", help="200000 records, 3 runs")
    a = p.parse_args(argv)
    records, repeats = (200_000, 3) if a.quick else (a.records, a.repeats)
    ways = {"10000": records, "100": records // 5, "next": records // 10}
    walls: dict[tuple[str, bool], list[float]] = {}
    cpus: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="dds-status-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        write_flat(data_dir / FILE, records)
        with ServerProc(data_dir) as on, ServerProc(data_dir, "--no-status-reports") as off:
            for how, total in ways.items():
                read_all(on, total, how)  # warm the page cache and both servers
                read_all(off, total, how)
                for i in range(repeats):
                    pair = ((True, on), (False, off))
                    for reports, server in (pair if i % 2 == 0 else pair[::-1]):
                        wall, cpu = read_all(server, total, how)
                        walls.setdefault((how, reports), []).append(wall)
                        cpus.setdefault((how, reports), []).append(cpu)
    load = os.getloadavg()[0]
    print(f"# status reports: with and without, {records} records of {STREAM} (5 numbers), {repeats} runs each, "
          f"alternating; load average {load:.1f} on {os.cpu_count()} CPUs\n")
    print("| reader | records | records/s with reports | without | ratio | server CPU us/record with | without "
          "| ratio (without / with) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    names = {"10000": "next_batch(10000)", "100": "next_batch(100)", "next": "next(), prefetch 256"}
    worst_wall = worst_cpu = 1e9
    for how, total in ways.items():
        with_, without = total / min(walls[how, True]), total / min(walls[how, False])
        cpu_with = min(cpus[how, True]) / total * 1e6
        cpu_without = min(cpus[how, False]) / total * 1e6
        worst_wall = min(worst_wall, with_ / without)
        worst_cpu = min(worst_cpu, cpu_without / cpu_with)
        print(f"| {names[how]} | {total} | {with_:,.0f} | {without:,.0f} | {with_ / without:.3f} "
              f"| {cpu_with:.3f} | {cpu_without:.3f} | {cpu_without / cpu_with:.3f} |")
    per_request = reporting_cost()
    per_reply = min(cpus["100", False]) / (ways["100"] / 100) * 1e6
    print(f"\nreporting per request, in-process: {per_request:.2f} us; server CPU per reply of next_batch(100) "
          f"without reports: {per_reply:.1f} us -> {per_request / per_reply:.2%} of a 100-record reply")
    print(f"\nworst ratio, throughput: {worst_wall:.3f}; server CPU per record: {worst_cpu:.3f} "
          f"(target >= 0.99: {'yes' if worst_cpu >= 0.99 else 'no'} on CPU, "
          f"{'yes' if worst_wall >= 0.99 else 'no'} on wall clock)")
    return 0

if __name__ == "__main__":
    sys.exit(main())
