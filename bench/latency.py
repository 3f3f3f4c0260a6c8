"""Live latency: how long after the DAQ appends a record does a client have it?

    python -m bench.latency                      # 1,000 appends per reader, a table
    python -m bench.latency --appends 3000 --interval 0.003 --poll-interval 0.01
    python -m bench.latency --writer uproot,root --autosave 1,10,100   # ROOT's TTree::Fill + AutoSave too

A writer process appends one record every ``interval`` seconds with uproot and
stamps ``time.time()`` into it just before the append; it rotates to a new file
twice (the next file is written under a temporary name and renamed to
``*.root`` with its first record, as the DAQ does). A client receives with
``next`` in ``all`` mode, then, against a fresh writer, in ``record`` mode;
latency is receive time minus stamp. With ``--writer root`` ROOT fills a TTree
and AutoSaves it every N entries: a record is readable only from the AutoSave
after it, so the latency floor is the AutoSave interval. The baseline is a local reader polling the
files itself at the server's poll interval. Last, the CPU share of a child that
waits in ``next(timeout=...)`` on a quiet file is read from /proc.

:func:`measure_latency` is what the benchmark runner calls (bench.live).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from dispatcher.testing import ServerProc

from .common import cpu_seconds, median, percentile

STREAM = "Live"
TYPES = {"seq": np.int64, "stamp": np.float64, "payload": "var * float32"}
#: targets of the live-data issue
P50_TARGET = 0.050
P99_TARGET = 0.250
CPU_TARGET = 0.10


def file_name(i: int) -> str:
    return f"F00000042_{i:04d}.mdaq.root"


# --------------------------------------------------------------------------- the writer


def _record(seq: int) -> dict:
    import awkward as ak

    n = seq % 5
    return {"seq": np.array([seq], np.int64), "stamp": np.array([time.time()]),
            "payload": ak.unflatten(np.arange(n, dtype=np.float32), [n])}


def _paced(appends: int, interval: float, rotations: int, start_file, append) -> None:
    """Records 1 .. ``appends``-1, one per ``interval``: ``start_file(seq)`` at each of ``rotations``
    evenly spaced rotations, ``append(seq)`` otherwise."""
    rotate_at = {appends * (k + 1) // (rotations + 1) for k in range(rotations)}
    tick = time.monotonic()
    for seq in range(1, appends):
        tick += interval
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if seq in rotate_at:
            start_file(seq)
        else:
            append(seq)


def _writer(data_dir: str, appends: int, interval: float, rotations: int, ready, go) -> None:
    """Append ``appends`` records, one per ``interval``, rotating ``rotations`` times; seq 0 is written first."""
    import uproot

    f = None
    tree = None
    index = 0

    def start_file(seq: int):
        nonlocal f, tree, index
        if f is not None:
            f.close()  # a file is complete before the next one appears
        name = file_name(index)
        index += 1
        temp = os.path.join(data_dir, f".{name}.tmp")
        f = uproot.recreate(temp)
        tree = f.mktree(STREAM, TYPES)
        tree.extend(_record(seq))
        os.replace(temp, os.path.join(data_dir, name))

    start_file(0)
    ready.set()
    if not go.wait(60):
        f.close()
        return
    _paced(appends, interval, rotations, start_file, lambda seq: tree.extend(_record(seq)))
    f.close()


def _root_writer(data_dir: str, appends: int, interval: float, rotations: int, autosave: int, ready, go) -> None:
    """As :func:`_writer`, with ROOT: ``TTree::Fill`` per record, ``AutoSave("SaveSelf")`` every
    ``autosave`` entries (and at a file's first record, when it appears under its name)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the PyPI build says it is an alpha on every import
        import ROOT  # noqa: N811

    seq, stamp = np.zeros(1, np.int64), np.zeros(1, np.float64)
    payload = ROOT.std.vector("float")()
    f = tree = None
    index = 0

    def fill(s: int) -> None:
        seq[0] = s
        payload.clear()
        for k in range(s % 5):
            payload.push_back(float(k))
        stamp[0] = time.time()
        tree.Fill()
        if tree.GetEntries() % autosave == 0:
            tree.AutoSave("SaveSelf")

    def close() -> None:
        if f is not None:
            f.Write("", ROOT.TObject.kOverwrite)
            f.Close()

    def start_file(s: int) -> None:
        nonlocal f, tree, index
        close()  # a file is complete before the next one appears
        name = file_name(index)
        index += 1
        temp = os.path.join(data_dir, f".{name}.tmp")
        f = ROOT.TFile.Open(temp, "RECREATE")
        tree = ROOT.TTree(STREAM, "latency")
        ROOT.SetOwnership(tree, False)  # the file owns and deletes it
        tree.Branch("seq", seq, "seq/L")
        tree.Branch("stamp", stamp, "stamp/D")
        tree.Branch("payload", payload)
        fill(s)
        tree.AutoSave("SaveSelf")
        os.replace(temp, os.path.join(data_dir, name))

    start_file(0)
    ready.set()
    if not go.wait(60):
        close()
        return
    _paced(appends, interval, rotations, start_file, fill)
    close()


class _Writer:
    """The writer process, started for one reader: uproot's writer, or ROOT AutoSaving every ``autosave``."""

    def __init__(self, data_dir: Path, appends: int, interval: float, rotations: int, writer: str = "uproot",
                 autosave: int = 1):
        ctx = multiprocessing.get_context("spawn")
        self.ready, self.go = ctx.Event(), ctx.Event()
        if writer == "root":
            target, args = _root_writer, (str(data_dir), appends, interval, rotations, autosave, self.ready, self.go)
        else:
            target, args = _writer, (str(data_dir), appends, interval, rotations, self.ready, self.go)
        self.proc = ctx.Process(target=target, args=args, daemon=True)
        self.proc.start()
        if not self.ready.wait(60):
            self.stop()
            raise RuntimeError("the writer process did not start")

    def alive(self) -> bool:
        return self.proc.is_alive()

    def stop(self) -> None:
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# --------------------------------------------------------------------------- readers


def _dds_reader(server: ServerProc, writer: _Writer, keep_up: str, appends: int) -> tuple[list, list]:
    """(latencies, seqs) of what a DDS client receives with next() in ``keep_up`` mode."""
    from clients import DDSClient, DDSTimeout, Subscription

    lat, seqs = [], []
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=[STREAM], keep_up=keep_up, start="latest"))
        writer.go.set()
        while True:
            try:
                rs = c.next(timeout=2.0)
            except DDSTimeout:
                if not writer.alive():
                    break
                continue
            now = time.time()
            rec = rs[STREAM]
            lat.append(now - rec["stamp"])
            seqs.append(rec["seq"])
            if rec["seq"] == appends - 1:
                break
    return lat, seqs


def _local_reader(data_dir: Path, writer: _Writer, poll: float, appends: int) -> tuple[list, list]:
    """The alternative without DDS: poll the files, re-open one when it changed, read its new entries."""
    import uproot

    lat, seqs = [], []
    seen, sigs = {}, {}
    for p in data_dir.glob("*.root"):  # like start="latest": what is there now is old
        with uproot.open(p) as f:
            seen[p.name] = f[STREAM].num_entries
            sigs[p.name] = None
    writer.go.set()
    quiet_since = None
    while True:
        got = False
        for p in sorted(data_dir.glob("*.root")):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            sig = (st.st_size, st.st_mtime_ns)
            if sigs.get(p.name) == sig:
                continue
            try:
                with uproot.open(p) as f:
                    tree = f[STREAM]
                    n, start = tree.num_entries, seen.get(p.name, 0)
                    if n > start:
                        a = tree.arrays(["seq", "stamp"], entry_start=start, entry_stop=n, library="np")
                        now = time.time()
                        lat.extend((now - a["stamp"]).tolist())
                        seqs.extend(a["seq"].tolist())
                        got = True
                    seen[p.name] = n
                    sigs[p.name] = sig
            except Exception:  # caught mid-write: look again at the next poll  # noqa: BLE001
                sigs[p.name] = None
        if seqs and seqs[-1] == appends - 1:
            break
        if got:
            quiet_since = None
        elif not writer.alive():
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 2.0:
                break
        time.sleep(poll)
    return lat, seqs


def idle_cpu_share(server: ServerProc, seconds: float = 2.0) -> float:
    """CPU share (of one core) of a child waiting in next(timeout=...) for a quiet file to grow."""
    from clients import DDSClient, DDSTimeout, Subscription

    before = set(server.children())
    with DDSClient(server.host, server.port) as c:
        c.subscribe(Subscription(streams=[STREAM], keep_up="all", start="latest"))
        child = next(iter(set(server.children()) - before), None)
        if child is None:
            raise RuntimeError("cannot find the child serving the idle client")

        def wait():
            try:
                c.next(timeout=seconds + 1.0)
            except DDSTimeout:
                pass

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.5)  # the child is inside the request, polling
        t0, c0 = time.monotonic(), cpu_seconds(child)
        time.sleep(seconds)
        share = (cpu_seconds(child) - c0) / (time.monotonic() - t0)
        t.join(seconds + 10)
    return share


# --------------------------------------------------------------------------- the measurement


def measure_latency(workdir, seconds: float | None = None, *, appends: int | None = None,
                    interval: float = 0.005, rotations: int = 2, poll_interval: float = 0.01,
                    writer: str = "uproot", autosave: int = 100) -> dict:
    """Append-to-receive latencies, in seconds, per reader.

    Args:
        workdir (str | Path): scratch directory (a data directory per reader goes in it).
        seconds (float): how long each writer runs; sets ``appends`` when that is not given.
        appends (int): records each writer appends (one per append); default 1,000.
        interval (float): seconds between appends; default 0.005.
        rotations (int): new files per writer run; default 2.
        poll_interval (float): the server's ``--poll-interval``; also the local baseline's poll.
        writer (str): ``"uproot"`` (default: uproot's writer, every append readable at once) or
            ``"root"`` (ROOT's ``TTree::Fill``, readable at each ``AutoSave("SaveSelf")``).
        autosave (int): the ROOT writer's entries per AutoSave; default 100.

    Returns:
        ``{"all": [...], "record": [...], "local": [...]}`` latencies, and ``"seqs"`` (per reader,
        the sequence numbers received), ``"cpu_share"`` (the idle child's share of one core).
    """
    if appends is None:
        appends = max(10, int(seconds / interval)) if seconds else 1000
    workdir = Path(workdir)
    out = {"seqs": {}, "appends": appends, "interval": interval, "poll_interval": poll_interval,
           "writer": writer, "autosave": autosave}
    for reader in ("all", "record", "local"):
        data_dir = workdir / f"latency-{reader}"
        data_dir.mkdir(parents=True, exist_ok=True)
        for p in data_dir.iterdir():
            p.unlink()
        writer = _Writer(data_dir, appends, interval, rotations, writer=out["writer"], autosave=autosave)
        try:
            if reader == "local":
                lat, seqs = _local_reader(data_dir, writer, poll_interval, appends)
            else:
                with ServerProc(data_dir, "--poll-interval", str(poll_interval),
                                log_file=workdir / f"server-latency-{reader}.log") as server:
                    lat, seqs = _dds_reader(server, writer, reader, appends)
                    if reader == "all":
                        writer.stop()
                        out["cpu_share"] = idle_cpu_share(server)
        finally:
            writer.go.set()
            writer.stop()
        out[reader], out["seqs"][reader] = lat, seqs
    return out


def table(result: dict) -> str:
    rows = [f"{'reader':<28} {'records':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"]
    labels = {"all": "DDS next(), keep_up='all'", "record": "DDS next(), keep_up='record'",
              "local": "local uproot poller"}
    for key, label in labels.items():
        v = result[key]
        if not v:
            rows.append(f"{label:<28} {0:>8}")
            continue
        rows.append(f"{label:<28} {len(v):>8,} {1e3 * median(v):>8.1f} {1e3 * percentile(v, 99):>8.1f} "
                    f"{1e3 * max(v):>8.1f}")
    rows.append(f"idle child in next(): {100 * result['cpu_share']:.1f}% of a core "
                f"(poll interval {result['poll_interval']:g} s)")
    return "\n".join(rows)


def check(result: dict) -> list[str]:
    """What missed a target or went wrong, as lines; empty when all is well."""
    bad = []
    appends = result["appends"]
    if result["seqs"]["all"] != list(range(1, appends)):
        bad.append("keep_up='all' did not receive every record exactly once, in order")
    rec = result["seqs"]["record"]
    if not rec or rec != sorted(set(rec)) or rec[-1] != appends - 1:
        bad.append("keep_up='record' went back, repeated a record or missed the newest")
    for mode in ("all", "record"):
        v = result[mode]
        if result.get("writer") == "root":
            continue  # ROOT's floor is its AutoSave interval: reported, not held to the targets
        if v and median(v) >= P50_TARGET:
            bad.append(f"{mode}: p50 {1e3 * median(v):.1f} ms >= {1e3 * P50_TARGET:.0f} ms")
        if v and percentile(v, 99) >= P99_TARGET:
            bad.append(f"{mode}: p99 {1e3 * percentile(v, 99):.1f} ms >= {1e3 * P99_TARGET:.0f} ms")
    if result["cpu_share"] >= CPU_TARGET:
        bad.append(f"idle child uses {100 * result['cpu_share']:.1f}% of a core")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    ap.add_argument("--appends", type=int, default=1000, help="records appended per reader (one per append)")
    ap.add_argument("--interval", type=float, default=0.005, help="seconds between appends")
    ap.add_argument("--rotations", type=int, default=2, help="file rotations per writer run")
    ap.add_argument("--poll-interval", type=float, default=0.01, help="the server's --poll-interval")
    ap.add_argument("--writer", default="uproot",
                    help="uproot, root, or both (comma-separated): who writes; ROOT AutoSaves every --autosave")
    ap.add_argument("--autosave", default="1,10,100",
                    help="the ROOT writer's entries per AutoSave, comma-separated for one run each")
    args = ap.parse_args(argv)
    runs = []
    for writer in args.writer.split(","):
        if writer not in ("uproot", "root"):
            ap.error(f"--writer: uproot or root, not {writer!r}")
        runs += [(writer, int(n)) for n in args.autosave.split(",")] if writer == "root" else [(writer, 0)]
    print(f"{args.appends} appends, one record every {1e3 * args.interval:g} ms, {args.rotations} rotations; "
          f"targets (uproot's writer) p50 < {1e3 * P50_TARGET:.0f} ms, p99 < {1e3 * P99_TARGET:.0f} ms")
    bad = []
    for writer, autosave in runs:
        with tempfile.TemporaryDirectory(prefix="dds-latency-") as tmp:
            result = measure_latency(tmp, appends=args.appends, interval=args.interval, rotations=args.rotations,
                                     poll_interval=args.poll_interval, writer=writer, autosave=autosave or 1)
        print()
        print("uproot's writer (extend: readable at once)" if writer == "uproot" else
              f"ROOT {writer_version()} (TTree::Fill, AutoSave every {autosave} entries = "
              f"{1e3 * autosave * args.interval:g} ms)")
        print(table(result))
        bad += [f"{writer} {autosave or ''}: {line}" for line in check(result)]
    for line in bad:
        print("MISSED:", line)
    return 1 if bad else 0


def writer_version() -> str:
    """ROOT's version, read without importing ROOT here."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"wheel {version('root')}"
    except PackageNotFoundError:
        return "(version unknown)"


if __name__ == "__main__":
    sys.exit(main())
