"""Soak test, run by hand: clients come and go constantly against one server with live data.

    python -m bench.soak --minutes 10

A simulated DAQ (demo.daqsim.DaqSimulator) writes rotating files; a few client
processes connect, subscribe (random keep-up mode and start), read for a moment
and leave, some politely, some by just dropping the socket, over and over. Every
few seconds the parent server's RSS, open descriptors and children are sampled.
At the end a table is printed and growth is flagged: the parent must stay flat
(it forks children, it must not accumulate anything per connection) and every
child must be gone once the clients stop. Exit status 0 when nothing grew, 1 otherwise.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

from dispatcher.testing import ServerProc

from .common import open_fds, proc_status

#: growth that is flagged: RSS beyond this factor of the first steady sample, or more descriptors
RSS_GROWTH = 1.10
WARMUP_SHARE = 0.2  # the first part of the run is warm-up (imports, caches)


def _daq(data_dir: str, stop) -> None:
    from demo.daqsim import DaqSimulator

    with DaqSimulator(data_dir, seconds_per_file=20.0, keep_files=4, seed=7) as sim:
        sim.run(stop_event=stop)


def _churn(host: str, port: int, stop, seed: int, counts) -> None:
    """One client process: connect, subscribe, read a little, leave; again and again."""
    from clients import DDSClient, DDSError, Subscription

    rng = random.Random(seed)
    streams = [["DaqSnarl"], ["DaqMonitor"], ["DaqSnarl", "DaqMonitor"], ["DcsMonitor"]]
    while not stop.is_set():
        try:
            c = DDSClient(host, port, connect_timeout=5)
        except DDSError:  # busy: the server is full right now
            time.sleep(0.05)
            with counts.get_lock():
                counts[1] += 1
            continue
        try:
            c.subscribe(Subscription(streams=rng.choice(streams), keep_up=rng.choice(["all", "file", "record"]),
                                     start=rng.choice(["current", "latest", "oldest"])))
            until = time.monotonic() + rng.uniform(0.0, 1.5)
            while time.monotonic() < until and not stop.is_set():
                if rng.random() < 0.5:
                    c.next(timeout=1.0)
                else:
                    c.next_batch(rng.choice([1, 100, 5000]), timeout=1.0)
        except DDSError:
            pass  # a timeout on a quiet stream, or the server stopping
        finally:
            if rng.random() < 0.3 and c._sock is not None:  # leave rudely: no goodbye, just a closed socket
                c._sock.shutdown(socket.SHUT_RDWR)
            c.close()
            with counts.get_lock():
                counts[0] += 1


def _sample(srv: ServerProc) -> dict:
    st = proc_status(srv.pid)
    return {"rss": st.get("VmRSS", -1), "fds": open_fds(srv.pid), "children": len(srv.children())}


def _table(rows: list[dict]) -> str:
    out = [f"{'t (s)':>7} {'connections':>12} {'busy':>6} {'parent RSS (MB)':>16} {'open fds':>9} {'children':>9}"]
    for r in rows:
        out.append(f"{r['t']:7.0f} {r['conns']:12,} {r['busy']:6,} {r['rss'] / 1024:16.1f} {r['fds']:9} "
                   f"{r['children']:9}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long; default 10")
    ap.add_argument("--clients", type=int, default=6, help="client processes churning at once; default 6")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples; default 5")
    ap.add_argument("--max-clients", type=int, default=8, help="the server's -m; default 8")
    args = ap.parse_args(argv)

    ctx = multiprocessing.get_context("fork")
    stop_daq, stop_clients = ctx.Event(), ctx.Event()
    counts = ctx.Array("q", 2)  # connections done, busy answers
    with tempfile.TemporaryDirectory(prefix="ddssoak-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        daq = ctx.Process(target=_daq, args=(str(data), stop_daq), daemon=True)
        daq.start()
        for _ in range(200):  # wait for the first file
            if any(p.suffix == ".root" for p in data.iterdir()):
                break
            time.sleep(0.05)
        srv = ServerProc(data, "-m", str(args.max_clients), log_file=Path(tmp) / "server.log", level="Info")
        procs = []
        rows = []
        t0 = time.monotonic()
        try:
            procs = [ctx.Process(target=_churn, args=(srv.host, srv.port, stop_clients, i, counts), daemon=True)
                     for i in range(args.clients)]
            for p in procs:
                p.start()
            duration = args.minutes * 60
            print(f"soak: {args.clients} churning clients, server pid {srv.pid}, {args.minutes:g} min; "
                  f"sampling every {args.sample:g} s", flush=True)
            next_t = t0
            while True:
                now = time.monotonic()
                if now >= next_t:
                    row = {"t": now - t0, "conns": counts[0], "busy": counts[1], **_sample(srv)}
                    rows.append(row)
                    print(_table([row]).splitlines()[1], flush=True)
                    next_t += args.sample
                if now - t0 >= duration:
                    break
                time.sleep(min(0.5, max(0.0, next_t - time.monotonic())))
        finally:
            stop_clients.set()
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
                    p.join(5)
            # every child must go away once its client has
            deadline = time.monotonic() + 10
            while srv.children() and time.monotonic() < deadline:
                time.sleep(0.1)
            end = {"t": time.monotonic() - t0, "conns": counts[0], "busy": counts[1], **_sample(srv)}
            rows.append(end)
            srv.stop()
            stop_daq.set()
            daq.join(10)
            if daq.is_alive():
                daq.kill()
                daq.join(5)
    print()
    print(_table(rows))
    steady = [r for r in rows[:-1] if r["t"] >= WARMUP_SHARE * args.minutes * 60] or rows[:-1]
    first, last = steady[0], rows[-1]
    flags = []
    if last["rss"] > RSS_GROWTH * first["rss"]:
        flags.append(f"parent RSS grew from {first['rss'] / 1024:.1f} MB to {last['rss'] / 1024:.1f} MB")
    if last["fds"] > first["fds"]:
        flags.append(f"parent open descriptors grew from {first['fds']} to {last['fds']}")
    if last["children"]:
        flags.append(f"{last['children']} children still alive after every client left")
    rate = last["conns"] / max(last["t"], 1e-9)
    print(f"\n{last['conns']:,} connections in {last['t']:.0f} s ({rate:.1f}/s), {last['busy']:,} busy answers; "
          f"parent RSS {first['rss'] / 1024:.1f} -> {last['rss'] / 1024:.1f} MB, "
          f"descriptors {first['fds']} -> {last['fds']} (from t={first['t']:.0f} s)")
    for f in flags:
        print(f"GROWTH: {f}")
    if not flags:
        print("no growth")
    return 1 if flags else 0


if __name__ == "__main__":
    sys.exit(main())
