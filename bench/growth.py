"""Live latency and the serving child's CPU as the open file grows long.

    python -m bench.growth              # 1k, 10k, 50k, 100k appends in the file (a few minutes)
    python -m bench.growth --quick      # 1k, 10k, 50k (also BENCH_QUICK=1)
    python -m bench.growth --smoke      # tiny: checks the code, not the speed

A writer process fills one file with N appends of 10 records (as fast as uproot
writes), then appends one record every 50 ms for a few seconds, stamping
``time.time()`` into each just before its append; then it fills on to the next N.
During each live phase one reader at a time receives the stamped records:

- DDS: a client of a ``ddsparentserver``, ``keep_up="all"``, subscribed just before
  the phase (``start="latest"``), so its child parsed the file once and then follows it;
- DDS, full re-open: the same with a server started with ``DDS_TAIL_REOPEN=1``, whose
  children parse the whole file again on every change (how DDS tailed before);
- local poller (the baseline): a process that stats the file every poll interval and,
  when it changed, opens it with uproot and reads the new entries (numpy library).

Latency is receive time minus stamp; CPU is the reader's (the serving child's, or
the poller's own) CPU seconds over the phase's wall time, from /proc.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dispatcher.testing import ServerProc

from .common import cpu_seconds, median, percentile
from .scenarios import Bench, Section, Summary, fmt_ms, ratio

STREAM = "Live"
FILE = "F00000077_0001.mdaq.root"
RECORDS_PER_FILL = 10
INTERVAL = 0.050
POLL_INTERVAL = 0.010  # the server's default --poll-interval
#: appends in the file before each live phase, and the seconds each reader listens
PLANS = {"full": ((1_000, 10_000, 50_000, 100_000), 5.0),
         "quick": ((1_000, 10_000, 50_000), 3.0),
         "smoke": ((100, 1_000), 1.0)}
P50_TARGET = 0.020
CPU_TARGET = 0.05
READERS = (("dds", "DDS (follows the file)"), ("reopen", "DDS, full re-open (before)"),
           ("local", "local uproot poller (baseline)"))


# --------------------------------------------------------------------------- the writer


def _writer(path: str, commands, replies) -> None:
    """Obey ``("fill", appends)`` (10 records each, unstamped), ``("live", seconds)`` (one stamped
    record per INTERVAL) and ``("stop",)``; reply with the appends in the file after each."""
    import uproot

    seq = 0
    appends = 0
    tmp = path + ".tmp"
    f = uproot.recreate(tmp)
    tree = f.mktree(STREAM, {"seq": np.int64, "stamp": np.float64, "x": np.float32})

    def append(n: int, stamp: float) -> None:
        nonlocal seq, appends
        s = np.arange(seq, seq + n, dtype=np.int64)
        tree.extend({"seq": s, "stamp": np.full(n, time.time() if stamp else 0.0), "x": s.astype(np.float32)})
        seq += n
        appends += 1

    append(RECORDS_PER_FILL, 0)
    os.replace(tmp, path)
    try:
        while True:
            cmd = commands.get()
            if cmd[0] == "fill":
                while appends < cmd[1]:
                    append(RECORDS_PER_FILL, 0)
            elif cmd[0] == "live":
                tick = time.monotonic()
                end = tick + cmd[1]
                while tick < end:
                    tick += INTERVAL
                    time.sleep(max(0.0, tick - time.monotonic()))
                    append(1, 1)
            else:
                break
            f.file.sink.flush()
            replies.put(appends)
    finally:
        f.close()


# --------------------------------------------------------------------------- the readers


def _poller(path: str, seconds: float, ready, go, out) -> None:
    """The baseline: stat, re-open with uproot when changed, read the new entries."""
    import uproot

    lat: list[float] = []
    seen = uproot.open(path)[STREAM].num_entries
    sig = None
    ready.set()
    go.wait(60)
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(POLL_INTERVAL)
        st = os.stat(path)
        if (st.st_size, st.st_mtime_ns) == sig:
            continue
        try:
            with uproot.open(path) as f:
                tree = f[STREAM]
                n = tree.num_entries
                if n > seen:
                    stamps = tree["stamp"].array(entry_start=seen, entry_stop=n, library="np")
                    now = time.time()
                    lat.extend(now - s for s in stamps.tolist() if s > 0)
                    seen = n
            sig = (st.st_size, st.st_mtime_ns)
        except Exception:  # a torn state: the next poll looks again
            pass
    out.put((lat, (time.process_time() - cpu0) / (time.monotonic() - t0)))


def _dds_phase(server: ServerProc, commands, replies, seconds: float) -> tuple[list[float], float]:
    """Latencies of a DDS client over one live phase, and its serving child's CPU share."""
    from clients import DDSClient, DDSTimeout, Subscription

    before = set(server.children())
    lat: list[float] = []
    with DDSClient(server.host, server.port) as client:
        client.subscribe(Subscription(streams=[STREAM], keep_up="all", start="latest"))
        child = next(iter(set(server.children()) - before))
        with contextlib.suppress(DDSTimeout):
            client.next_batch(max_records=100_000, timeout=0.2)  # the child has the file open now
        cpu0, t0 = cpu_seconds(child), time.monotonic()
        commands.put(("live", seconds))
        done = False
        while time.monotonic() - t0 < seconds + 30:
            try:
                b = client.next_batch(max_records=1000, timeout=0.3)
            except DDSTimeout:
                if done:
                    break  # the writer finished and nothing more came
                continue
            now = time.time()
            lat.extend(now - s for s in b.arrays["stamp"].to_list() if s > 0)
            if not done and not replies.empty():
                replies.get()
                done = True
        share = (cpu_seconds(child) - cpu0) / (time.monotonic() - t0)
        if not done:
            replies.get(timeout=30)
    return lat, share


def _local_phase(path: str, commands, replies, seconds: float) -> tuple[list[float], float]:
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_poller, args=(path, seconds, ready, go, out))
    p.start()
    try:
        ready.wait(60)
        commands.put(("live", seconds))
        go.set()
        lat, share = out.get(timeout=seconds + 60)
        replies.get()
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()
    return lat, share


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def measure(workdir: Path, sizes: tuple, seconds: float) -> dict:
    """``{appends: {reader: (latencies, cpu share)}}`` for each size in ``sizes``."""
    data = workdir / "growth"
    data.mkdir(parents=True, exist_ok=True)
    path = str(data / FILE)
    ctx = multiprocessing.get_context("spawn")
    commands, replies = ctx.Queue(), ctx.Queue()
    writer = ctx.Process(target=_writer, args=(path, commands, replies))
    writer.start()
    out: dict = {}
    try:
        with ServerProc(data) as follows:
            with _env("DDS_TAIL_REOPEN", "1"):
                reopens = ServerProc(data)
            try:
                for n in sizes:
                    commands.put(("fill", n))
                    replies.get(timeout=600)
                    out[n] = {"dds": _dds_phase(follows, commands, replies, seconds),
                              "reopen": _dds_phase(reopens, commands, replies, seconds),
                              "local": _local_phase(path, commands, replies, seconds)}
            finally:
                reopens.stop()
    finally:
        commands.put(("stop",))
        writer.join(30)
        if writer.is_alive():
            writer.kill()
            writer.join()
    return out


# --------------------------------------------------------------------------- the table


def section(results: dict, seconds: float) -> Section:
    rows, summary = [], []
    for n, readers in results.items():
        for key, label in READERS:
            lat, share = readers[key]
            if not lat:
                raise RuntimeError(f"no live record reached the {label} at {n:,} appends")
            rows.append([f"{n:,}", label, f"{len(lat):,}", fmt_ms(median(lat)), fmt_ms(percentile(lat, 99)),
                         f"{share:.1%}"])
        (dds, dds_cpu), (base, _), (old, old_cpu) = readers["dds"], readers["local"], readers["reopen"]
        summary.append(Summary(f"10. live latency p50, {n:,} appends in the file", fmt_ms(median(dds)),
                               f"local poller {fmt_ms(median(base))}; full re-open {fmt_ms(median(old))}",
                               ratio(median(dds), median(base)), "< 20 ms", median(dds) < P50_TARGET))
        summary.append(Summary(f"10. tailing child's CPU, {n:,} appends in the file", f"{dds_cpu:.1%} of a core",
                               f"full re-open {old_cpu:.1%}", ratio(dds_cpu, old_cpu), "< 5% of a core",
                               dds_cpu < CPU_TARGET))
    notes = [f"bench.growth: one file holds N appends of {RECORDS_PER_FILL} records; then a writer process appends "
             f"one record every {INTERVAL * 1e3:g} ms for {seconds:g} s per reader, stamping the wall-clock time into "
             f"each; latency is receive time minus stamp. CPU is the serving child's (for the poller: its own) over "
             f"the phase. 'Full re-open' is a server started with DDS_TAIL_REOPEN=1 (every change parses the whole "
             f"file again, as DDS did before it followed files in place); the poller stats the file every "
             f"{POLL_INTERVAL * 1e3:g} ms and re-opens it with uproot when it changed."]
    return Section("10", "Live latency and child CPU as the open file grows",
                   ["appends in file", "reader", "records", "p50", "p99", "CPU"], rows, summary, notes)


def scenario_growing_file(bench: Bench) -> Section:
    """Live latency and child CPU at N appends per file, against the local poller and the full re-open."""
    sizes, seconds = PLANS[bench.sizes.mode]
    return section(measure(bench.workdir, sizes, seconds), seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1k, 10k and 50k appends (also BENCH_QUICK=1)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the code runs")
    args = ap.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if (args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")) \
        else "full"
    sizes, seconds = PLANS[mode]
    with tempfile.TemporaryDirectory(prefix="dds-growth-") as tmp:
        sec = section(measure(Path(tmp), sizes, seconds), seconds)
    print(f"## {sec.key}. {sec.title} ({mode} sizes)\n")
    print("| " + " | ".join(sec.columns) + " |\n|" + "---|" * len(sec.columns))
    for r in sec.rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    print()
    for s in sec.summary:
        print(f"- {s.scenario}: {s.figure} ({s.baseline}); target {s.target}: {'met' if s.met else 'NOT met'}")
    for note in sec.notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
