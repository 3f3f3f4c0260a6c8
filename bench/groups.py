"""Scenario 9: groups (shared subscriptions). A farm of 1, 2 and 4 members against one plain client and
against as many local uproot readers splitting the file between them, and the time from a member's death to
its records reaching another member.

    python -m bench.run --only 9
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import time

from dispatcher.testing import ServerProc

from . import common
from .common import STREAM, median, percentile
from .scenarios import BIG_BATCH, FLAT_FILE, TAIL_FILE, Bench, Section, Summary, fmt_ms, fmt_rate, ratio

#: member counts measured
MEMBERS = (1, 2, 4)
#: target: a farm of 4 gets at least this share of one plain client's rate (2 cores: it cannot grow)
FARM_TARGET = 0.8
#: target: a dead member's records reach another member within this many seconds
REDELIVERY_TARGET = 1.0

_names = itertools.count()


def _reader(host, port, group, ready, go, out):
    """One client (a group member, or with ``group`` None a plain subscriber): read the flat file
    with next_batch, report (records, monotonic time of the last one)."""
    from clients import DDSClient, DDSTimeout, Subscription

    try:
        c = DDSClient(host, port)
        if group is None:
            c.subscribe(Subscription(streams=[STREAM], keep_up="all", start=FLAT_FILE))
        else:
            c.subscribe(Subscription(streams=[STREAM], group=group, start=FLAT_FILE))
        ready.put(os.getpid())
        go.wait(60)
        n, last = 0, time.monotonic()
        while True:
            try:
                b = c.next_batch(BIG_BATCH, timeout=1.0 if group is not None else 30.0)
            except DDSTimeout:  # the others took the rest
                break
            if b.file != FLAT_FILE:
                break
            n += len(b)
            last = time.monotonic()
        c.close()
        out.put((n, last))
    except BaseException as exc:  # report, never hang the runner
        ready.put(-1)
        out.put(f"{type(exc).__name__}: {exc}")


def _local(path, lo, hi, ready, go, out):
    """The fastest a farm can do without DDS: a local process reading its own slice of the file with uproot's
    numpy path; reports (records, monotonic time of the last one)."""
    import uproot

    try:
        tree = uproot.open(path)[STREAM]
        ready.put(os.getpid())
        go.wait(60)
        n = 0
        for arrays in tree.iterate(step_size=BIG_BATCH, entry_start=lo, entry_stop=hi, library="np"):
            n += len(arrays["evt"])
        out.put((n, time.monotonic()))
    except BaseException as exc:
        ready.put(-1)
        out.put(f"{type(exc).__name__}: {exc}")


def _farm(bench: Bench, server: ServerProc, members: int, group: str | None, local: bool = False) -> float:
    """Records per second of ``members`` processes reading the flat file together (first go to last record):
    DDS clients (``group`` None: one plain subscriber), or local readers of one slice each."""
    ctx = multiprocessing.get_context("fork")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    n = bench.sizes.records
    if local:
        cuts = [n * i // members for i in range(members + 1)]
        jobs = [(bench.flat_path, lo, hi, ready, go, out) for lo, hi in zip(cuts[:-1], cuts[1:])]
        procs = [ctx.Process(target=_local, args=job, daemon=True) for job in jobs]
    else:
        procs = [ctx.Process(target=_reader, args=(server.host, server.port, group, ready, go, out), daemon=True)
                 for _ in range(members)]
    for p in procs:
        p.start()
    try:
        pids = [ready.get(timeout=120) for _ in procs]
        if -1 in pids:
            raise RuntimeError(f"a reader failed: {out.get(timeout=10)}")
        t0 = time.monotonic()
        go.set()
        results = [out.get(timeout=300) for _ in procs]
    finally:
        common.end_processes(procs)
    bad = [r for r in results if not isinstance(r, tuple)]
    if bad:
        raise RuntimeError(f"a reader failed: {bad[0]}")
    total = sum(n for n, _ in results)
    if total != bench.sizes.records:
        raise RuntimeError(f"{members} readers got {total:,} records of {bench.sizes.records:,}")
    return total / (max(last for _, last in results) - t0)


def _victim(host, port, group, ready):
    """A member that takes one batch and then hangs on to it (until it is killed)."""
    from clients import DDSClient, Subscription

    c = DDSClient(host, port)
    c.subscribe(Subscription(streams=[STREAM], group=group, start=TAIL_FILE))
    b = c.next_batch(5, timeout=30)
    ready.put(len(b))
    time.sleep(600)


def _redelivery(server: ServerProc) -> float:
    """Seconds from SIGKILL of a member holding 5 records to another member receiving them."""
    from clients import DDSClient, DDSTimeout, Subscription

    ctx = multiprocessing.get_context("fork")
    group = f"bench-redeliver-{os.getpid()}-{next(_names)}"
    ready = ctx.Queue()
    victim = ctx.Process(target=_victim, args=(server.host, server.port, group, ready), daemon=True)
    with DDSClient(server.host, server.port) as other:
        other.subscribe(Subscription(streams=[STREAM], group=group, start=TAIL_FILE))
        victim.start()
        try:
            if ready.get(timeout=60) != 5:
                raise RuntimeError("the victim did not get its 5 records")
            for _ in range(10):  # the rest of the file, then nothing: caught up
                try:
                    other.next_batch(100, timeout=0.3)
                except DDSTimeout:
                    break
            t0 = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)
            b = other.next_batch(100, timeout=30)
            seconds = time.monotonic() - t0
        finally:
            if victim.is_alive():
                victim.kill()
            victim.join(10)
    if not b.redelivered or len(b) != 5:
        raise RuntimeError(f"after the kill: {len(b)} records, redelivered={b.redelivered}")
    return seconds


def scenario_groups(bench: Bench) -> Section:
    s = bench.sizes
    best: dict = {}
    # its own server without the basket cache: members read disjoint ranges, so the cache would only carry
    # blocks over from earlier scenarios and earlier runs on the same file
    server = ServerProc(bench.data, "-m", "40", "--basket-cache-mb", "0", log_file=bench.workdir / "server-9.log")
    try:
        for _ in range(s.repeat):  # plain, farms and local readers alternating: a busy neighbour slows all alike
            best["plain"] = max(best.get("plain", 0.0), _farm(bench, server, 1, None))
            for k in MEMBERS:
                rate = _farm(bench, server, k, f"bench-{os.getpid()}-{next(_names)}")
                best[k] = max(best.get(k, 0.0), rate)
                best[("local", k)] = max(best.get(("local", k), 0.0), _farm(bench, server, k, None, local=True))
        samples = [_redelivery(server) for _ in range(3 if s.mode == "smoke" else 12)]
    finally:
        server.stop()
    plain = best["plain"]
    rows = [["one plain client", fmt_rate(plain), "1.00", "—"]]
    for k in MEMBERS:
        loc = best[("local", k)]
        rows.append([f"group of {k}", fmt_rate(best[k]), f"{ratio(best[k], plain):.2f}", f"{ratio(best[k], loc):.2f}"])
        rows.append([f"{k} local uproot reader{'s' if k > 1 else ''}, a slice each (baseline)", fmt_rate(loc),
                     f"{ratio(loc, plain):.2f}", "1.00"])
    summary = [Summary(f"9. group of {k}: aggregate", fmt_rate(best[k]), f"one plain client {fmt_rate(plain)}",
                       ratio(best[k], plain), f">= {FARM_TARGET}" if k == max(MEMBERS) else "(reported)",
                       ratio(best[k], plain) >= FARM_TARGET if k == max(MEMBERS) else None) for k in MEMBERS]
    summary += [Summary(f"9. group of {k} vs {k} local readers of a slice each", fmt_rate(best[k]),
                        f"{k} local uproot numpy {fmt_rate(best[('local', k)])}", ratio(best[k], best[("local", k)]),
                        "(reported)", None) for k in MEMBERS]
    p50, worst = median(samples), max(samples)
    summary.append(Summary("9. member killed: its records at another member, p50", fmt_ms(p50),
                           f"poll interval {fmt_ms(0.01)}", ratio(p50, 0.01), f"< {REDELIVERY_TARGET:g} s",
                           worst < REDELIVERY_TARGET))
    return Section(
        "9", "Groups: a farm sharing one stream",
        ["readers", "records/s (all of them)", "vs one plain client", "vs as many local readers"],
        rows + [["member killed -> its records at another member", f"p50 {fmt_ms(p50)}, p99 "
                 f"{fmt_ms(percentile(samples, 99))}, max {fmt_ms(worst)} ({len(samples)} kills)", "—", "—"]],
        summary=summary,
        notes=[f"All {s.records:,} records of the flat file, read with next_batch({BIG_BATCH}) by one plain "
               f"client (keep_up='all', streamed batches) and by groups of {', '.join(map(str, MEMBERS))} member "
               f"processes (each asks for the next range when it has its last; asking acknowledges). Rate: "
               f"records over the time from the start signal to the last record any member received; best of "
               f"{s.repeat}, plain, groups and local readers alternating. Every run checks that the members "
               f"together got every record once. The baseline for a group of k is what a farm can do without "
               f"DDS: k local processes, each reading its own slice of the closed file with uproot's numpy path "
               f"(a live file cannot be sliced ahead of time). The machine has {os.cpu_count()} cores, so a farm "
               f"shares them with its serving children and cannot go faster than they allow. The server of this "
               f"scenario runs without the basket cache (--basket-cache-mb 0): members read disjoint ranges, so it "
               f"would only carry over blocks other scenarios decompressed.",
               "Redelivery: a member holding 5 records (unacknowledged) is SIGKILLed while another member waits "
               "in next_batch; timed from the kill to that member's reply, which must hold the 5 records, marked "
               "redelivered. In between: the victim's child sees its client gone and exits, the parent reaps it "
               "and gives its range back to the group, and the waiting member's child finds it at its next poll "
               "(the server's poll interval, 10 ms, backing off to 50 ms when the data is quiet)."],
    )
