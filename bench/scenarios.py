"""The benchmark scenarios, each measured next to its baseline in the same run.

Every scenario is a function ``scenario_x(bench) -> Section``: it uses the shared
:class:`Bench` (a temporary data directory, one ``ddsparentserver`` serving it,
the sizes of the chosen mode) and returns the rows of its own table and of the
summary. Throughputs are the best of ``repeat`` runs, DDS and baseline
alternating, so a busy neighbour on the machine slows both alike; latencies are
medians and 99th percentiles over many samples.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dispatcher.testing import ServerProc

from . import common, peers, selection_speed
from .common import STREAM, bytes_received, cpu_seconds, median, percentile, proc_status

FLAT_FILE = "F0001_flat.root"
TAIL_FILE = "F9999_tail.root"  # makes every earlier file closed
BATCH = 10_000
BIG_BATCH = 50_000  # scenarios 1 and 2: next_batch(50000) against uproot.iterate(step_size=50000)
DAQ_STEPS = 400  # 20 simulated seconds of demo.daqsim: ~4,000 DaqSnarl records in 400 baskets per branch


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """How big each scenario runs; ``full`` for ``make bench``, ``quick`` for BENCH_QUICK=1, ``smoke`` for CI."""

    mode: str
    records: int  # records of the flat file (scenarios 1, 2, 5, 6, 8)
    repeat: int  # runs per throughput figure (best of)
    next_records: int  # records fetched with next() at prefetch 256
    next_records_rt: int  # ... and at prefetch 1 (one round trip each)
    latency_seconds: float  # how long each latency writer appends (one record per 5 ms)
    fanout: tuple  # numbers of concurrent clients
    fanout_seconds: float
    connections: int  # scenario 6
    mem_small_mb: int  # MiB of uncompressed records; the file is ~0.9 of it (random floats barely compress)
    mem_big_mb: int
    parent_connections: int  # scenario 7, parent RSS


SIZES = {
    "full": Sizes("full", 2_000_000, 5, 200_000, 10_000, 5.0, (1, 8, 32, 64), 4.0, 100, 110, 1100, 1000),
    "quick": Sizes("quick", 1_000_000, 3, 100_000, 5_000, 2.5, (1, 8, 32, 64), 2.0, 100, 50, 256, 300),
    "smoke": Sizes("smoke", 20_000, 1, 2_000, 200, 0.5, (1, 2), 0.3, 8, 2, 6, 10),
}


# --------------------------------------------------------------------------- results


@dataclass
class Summary:
    """One line of the summary table."""

    scenario: str
    figure: str  # DDS, with its absolute value and unit
    baseline: str  # what it is compared with, with its absolute value
    ratio: float  # figure / baseline
    target: str  # e.g. ">= 0.5"
    met: bool | None  # None: no target, reported only


@dataclass
class Section:
    """One scenario's results: its own table, its summary lines and notes."""

    key: str
    title: str
    columns: list
    rows: list
    summary: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    seconds: float = 0.0


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f} M/s"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k/s"
    return f"{x:.0f} /s"


def fmt_mb(x: float) -> str:
    return f"{x / 1e6:.0f} MB/s"


def fmt_ms(x: float) -> str:
    return f"{x * 1e3:.1f} ms"


# --------------------------------------------------------------------------- the shared set-up


class Bench:
    """The data directory, the server and the sizes every scenario shares.

    Args:
        workdir (str): an empty scratch directory; everything is created below it.
        sizes (Sizes): how big to run.
    """

    def __init__(self, workdir, sizes: Sizes):
        self.workdir = Path(workdir)
        self.sizes = sizes
        self.data = self.workdir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self._server: ServerProc | None = None
        self._daq: tuple | None = None
        self._xrootd: peers.XRootDPeer | None = None
        self._flight: peers.FlightPeer | None = None
        self.results: dict = {}  # figures later scenarios compare with
        t0 = time.perf_counter()
        self.flat_size = common.write_flat(self.data / FLAT_FILE, sizes.records)
        common.write_flat(self.data / TAIL_FILE, 10, seed=99)
        self.write_seconds = time.perf_counter() - t0

    @property
    def flat_path(self) -> str:
        return str(self.data / FLAT_FILE)

    def daq_server(self) -> tuple[ServerProc, str]:
        """A server on a directory of one file as the DAQ writes it (demo.daqsim: one small basket per
        50 ms append, three trees), so start="current" is that file; made once. Returns (server, file path)."""
        if self._daq is None:
            from demo.daqsim import DaqSimulator

            d = self.workdir / "daq"
            sim = DaqSimulator(d, seconds_per_file=None, start_time=1.7e9, seed=3)
            for _ in range(DAQ_STEPS if self.sizes.mode != "smoke" else 40):
                sim.step()
            path = str(d / sim.current_file)
            sim.close()
            self._daq = (ServerProc(d, log_file=self.workdir / "server-daq.log"), path)
        return self._daq

    @property
    def max_clients(self) -> int:
        return max(40, max(self.sizes.fanout) + 8)

    @property
    def server(self) -> ServerProc:
        if self._server is None:
            self._server = ServerProc(self.data, "-m", str(self.max_clients), log_file=self.workdir / "server.log")
        return self._server

    def xrootd_peer(self) -> peers.XRootDPeer:
        """A real XRootD server on loopback exporting a copy of the flat file; made once."""
        if self._xrootd is None:
            self._xrootd = peers.XRootDPeer(self.flat_path)
        return self._xrootd

    def flight_peer(self) -> peers.FlightPeer:
        """An Arrow Flight server (own process) that reads with uproot; made once."""
        if self._flight is None:
            self._flight = peers.FlightPeer()
            self._flight.read(self.flat_path, BIG_BATCH)  # warm: its imports, the file's metadata
        return self._flight

    def client(self, **kw):
        from clients import DDSClient

        return DDSClient(self.server.host, self.server.port, **kw)

    def subscribed(self, *, start: str = FLAT_FILE, **kw):
        from clients import Subscription

        c = self.client(**{k: kw.pop(k) for k in ("prefetch",) if k in kw})
        c.subscribe(Subscription(streams=[STREAM], keep_up="all", start=start, **kw))
        return c

    def close(self) -> None:
        """Stop every process the scenarios started (each tried even when another fails to stop)."""
        stops = [(self._server, ServerProc.stop), (self._daq and self._daq[0], ServerProc.stop),
                 (self._xrootd, peers.XRootDPeer.close), (self._flight, peers.FlightPeer.close)]
        self._server = self._daq = self._xrootd = self._flight = None
        errors = []
        for thing, stop in stops:
            if thing is not None:
                try:
                    stop(thing)
                except Exception as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]



def _drain_file(c, name: str, batch: int, n: int, timeout: float) -> tuple[float, int, int]:
    """next_batch until n records of file ``name`` arrived: (seconds, records, uncompressed bytes)."""
    got = nbytes = 0
    t0 = time.perf_counter()
    while got < n:
        b = c.next_batch(batch, timeout=timeout)
        if b.file != name:
            break
        got += len(b)
        nbytes += b.arrays.nbytes
    return time.perf_counter() - t0, got, nbytes


def _read_dds(bench: Bench, n: int, batch: int = BATCH, **sub) -> tuple[float, int, int, int]:
    """Read the flat file through DDS with next_batch.

    Returns (seconds, records, uncompressed bytes, wire bytes); the time runs from the
    first request after subscribing (connecting is scenario 6) to the last record.
    """
    with bench.subscribed(**sub) as c:
        wire0 = bytes_received(c._sock) or 0
        dt, got, nbytes = _drain_file(c, FLAT_FILE, batch, n, timeout=30)
        wire = (bytes_received(c._sock) or 0) - wire0
    return dt, got, nbytes, wire


def _read_uproot(path: str, step: int = BATCH, cut=None) -> tuple[float, int, int]:
    """uproot.iterate over the file as awkward arrays (and the cut as an awkward mask); (seconds, records, bytes)."""
    import uproot

    got = nbytes = 0
    t0 = time.perf_counter()
    for arrays in uproot.iterate(f"{path}:{STREAM}", step_size=step, library="ak"):
        if cut is not None:
            arrays = arrays[cut(arrays)]
        got += len(arrays)
        nbytes += arrays.nbytes
    return time.perf_counter() - t0, got, nbytes


def _read_uproot_np(path: str, step: int = BIG_BATCH, cut=None) -> tuple[float, int, int]:
    """The fastest local reader a user would write: uproot.iterate with library="np" and a numpy mask."""
    import uproot

    got = nbytes = 0
    t0 = time.perf_counter()
    for arrays in uproot.iterate(f"{path}:{STREAM}", step_size=step, library="np"):
        if cut is not None:
            mask = cut(arrays)
            arrays = {k: v[mask] for k, v in arrays.items()}
        got += len(arrays["evt"])
        nbytes += sum(v.nbytes for v in arrays.values())
    return time.perf_counter() - t0, got, nbytes


def _cpu_split(bench: Bench, n: int, batch: int, **sub) -> tuple[float, float]:
    """CPU seconds of (the serving child, this client) to read the flat file through DDS: work done,
    whatever the machine's load does to wall time."""
    import resource

    before = set(bench.server.children())
    with bench.subscribed(**sub) as c:
        child = _child_of(bench.server, before)
        k0 = cpu_seconds(child) if child else math.nan
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        _drain_file(c, FLAT_FILE, batch, n, timeout=30)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(0.05)  # the child's last credit taken in
        k1 = cpu_seconds(child) if child else math.nan
    return k1 - k0, (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)


def _cpu_local(path: str, cut=None) -> float:
    t0 = time.process_time()
    _read_uproot_np(path, cut=cut)
    return time.process_time() - t0


def _cpu_note(bench: Bench, n: int, expected: int, selection: str | None, cut) -> str:
    sub = {"selection": selection} if selection else {}
    runs = [_cpu_split(bench, expected, BIG_BATCH, **sub) for _ in range(3)]
    child, client = min(r[0] for r in runs), min(r[1] for r in runs)
    local = min(_cpu_local(bench.flat_path, cut) for _ in range(3))
    return (f"CPU (best of 3, load-independent): the serving child {child:.3f} s, the client {client:.3f} s, "
            f"together {child + client:.3f} s; the local numpy reader {local:.3f} s. With a free core for each "
            f"side, streamed batches overlap the two, so the wall time tends to the larger of child and client.")


# --------------------------------------------------------------------------- 1. all records


def scenario_all_records(bench: Bench) -> Section:
    import uproot

    n = bench.sizes.records
    xrd, flight = bench.xrootd_peer(), bench.flight_peer()
    columns = uproot.open(bench.flat_path)[STREAM].arrays(library="np")
    t_big, t_small, t_np, t_ak, t_xrd, t_fl, t_page, t_tcp = ([] for _ in range(8))
    for _ in range(bench.sizes.repeat):
        t, got, nbytes, wire = _read_dds(bench, n, BIG_BATCH)
        t_big.append(t)
        t, got_small, _nb, _w = _read_dds(bench, n, BATCH)
        t_small.append(t)
        t, bgot, bbytes = _read_uproot_np(bench.flat_path)
        t_np.append(t)
        t, agot, _ab = _read_uproot(bench.flat_path, BIG_BATCH)
        t_ak.append(t)
        t, xgot, _xb = xrd.read(BIG_BATCH)
        t_xrd.append(t)
        t, fgot, _fb = flight.read(bench.flat_path, BIG_BATCH)
        t_fl.append(t)
        t, file_bytes = peers.read_page_cache(bench.flat_path)
        t_page.append(t)
        t, tcp_bytes = peers.read_loopback(columns, BIG_BATCH)
        t_tcp.append(t)
    del columns
    if {got, got_small, bgot, agot, xgot, fgot} != {n} or tcp_bytes != bbytes:
        raise RuntimeError(f"read {got}/{got_small} records through DDS, {bgot}/{agot} with uproot, {xgot} "
                           f"through XRootD, {fgot} through Flight, expected {n}; {tcp_bytes} bytes over "
                           f"plain TCP, expected {bbytes}")
    dds, small, base, akr = n / min(t_big), n / min(t_small), n / min(t_np), n / min(t_ak)
    xrr, flr, pager, tcpr = n / min(t_xrd), n / min(t_fl), n / min(t_page), n / min(t_tcp)
    bench.results["all_rate"] = dds
    bench.results["all_mbs"] = nbytes / min(t_big)
    bench.results["all_bytes"] = nbytes
    r = ratio(dds, base)

    def row(name, rate, times, nb, what=""):
        return [name, fmt_rate(rate), fmt_mb(nb / min(times)) + what, f"{min(times):.3f}", f"{median(times):.3f}",
                f"{ratio(rate, base):.2f}", f"{ratio(dds, rate):.2f}"]

    rows = [
        row(f"DDS next_batch({BIG_BATCH})", dds, t_big, nbytes),
        row(f"DDS next_batch({BATCH})", small, t_small, nbytes),
        row(f"uproot.iterate(step_size={BIG_BATCH}, library='np'), local (baseline)", base, t_np, bbytes),
        row(f"uproot.iterate(step_size={BIG_BATCH}, library='ak'), local", akr, t_ak, bbytes),
        row("peer: uproot.iterate(library='np') through XRootD on loopback (root://127.0.0.1)", xrr, t_xrd, bbytes),
        row(f"peer: Arrow Flight server (uproot, numpy), record batches of {BIG_BATCH}", flr, t_fl, bbytes),
        row("limit: the file's bytes read from the page cache", pager, t_page, file_bytes, " (file bytes)"),
        row(f"limit: the column bytes over plain TCP on loopback, {BIG_BATCH}-record sends", tcpr, t_tcp, tcp_bytes),
    ]
    wire_share = wire / nbytes
    sec = Section(
        "1", "All records of a closed file",
        ["reader", "records/s", "MB/s (uncompressed)", "best s", "median s", "ratio to local numpy",
         f"DDS next_batch({BIG_BATCH}) / this"], rows,
        notes=[f"{n:,} records of a 5-branch flat stream ({common.FLAT_RECORD_BYTES} bytes/record uncompressed), "
               f"written once with uproot in extends of 100,000 (one basket per branch each), file "
               f"{bench.flat_size / 1e6:.1f} MB (zlib). {bench.sizes.repeat} runs each, every reader in turn; "
               f"a DDS run is timed from its first request after subscribing (connecting is scenario 6) to its "
               f"last record. The baseline is the fastest local reader: numpy arrays straight from uproot; "
               f"awkward arrays (what DDS hands out) are shown beside it. Bytes on the wire for DDS: "
               f"{wire / 1e6:.1f} MB for {nbytes / 1e6:.1f} MB of column data ({wire_share:.2f}x).",
               "Peers, what a remote user could run instead: (a) Debian's xrootd server on 127.0.0.1 exporting a "
               "copy of the file, read with uproot.iterate on its root:// URL (numpy arrays, uproot's default "
               "handler for root://, fsspec-xrootd; the time includes opening the file, as for the local "
               "baseline); (b) an Arrow Flight server in its own process (bench/peers.py) that reads the file "
               "with uproot.iterate (numpy arrays) and streams each step as one Arrow record batch of the five "
               "columns; the client, connected beforehand, is timed from do_get to the last batch. Limits: the "
               "file read into one reused 4 MiB buffer from the page cache (records/s counts the records that "
               "file holds), and the column bytes sent by a forked process over a plain TCP socket to this one "
               "in 50,000-record sends, each received into a new buffer (as scenario 8's sender), timed from the "
               "go byte to the connected sender to the last byte. No reader of this file can beat the first, and "
               "none that gets it over a socket the second."],
    )
    sec.notes.append(_cpu_note(bench, n, n, None, None))
    sec.summary.append(Summary(f"1. all records, next_batch({BIG_BATCH})",
                               f"{fmt_rate(dds)} ({fmt_mb(nbytes / min(t_big))})",
                               f"uproot numpy {fmt_rate(base)}", r, ">= 0.9", r >= 0.9))
    sec.summary.append(Summary(f"1. all records, next_batch({BIG_BATCH}) vs uproot through XRootD",
                               fmt_rate(dds), f"uproot over XRootD on loopback {fmt_rate(xrr)}", ratio(dds, xrr),
                               ">= 1.2", ratio(dds, xrr) >= 1.2))
    sec.summary.append(Summary(f"1. all records, next_batch({BIG_BATCH}) vs an Arrow Flight server",
                               fmt_rate(dds), f"Flight (uproot numpy) {fmt_rate(flr)}", ratio(dds, flr),
                               ">= 1.0", ratio(dds, flr) >= 1.0))
    sec.summary.append(Summary(f"1. all records, next_batch({BATCH})", fmt_rate(small),
                               f"uproot numpy {fmt_rate(base)}", ratio(small, base), "(reported)", None))
    sec.summary.append(Summary("1. uproot awkward (what DDS hands out), local", fmt_rate(akr),
                               f"uproot numpy {fmt_rate(base)}", ratio(akr, base), "(reported)", None))
    sec.summary.append(Summary("1. limit: column bytes over plain TCP on loopback",
                               fmt_mb(nbytes / min(t_big)), f"plain TCP {fmt_mb(tcp_bytes / min(t_tcp))}",
                               ratio(dds, tcpr), "(reported)", None))
    sec.summary.append(Summary("1. limit: the file from the page cache", fmt_rate(dds),
                               f"page cache {fmt_rate(pager)} ({fmt_mb(file_bytes / min(t_page))} of file)",
                               ratio(dds, pager), "(reported)", None))
    sec.summary.append(Summary("1. bytes on the wire / column bytes, flat", f"{wire / 1e6:.1f} MB",
                               f"columns {nbytes / 1e6:.1f} MB", wire_share, "<= 1.1", wire_share <= 1.1))
    return sec


# --------------------------------------------------------------------------- 2. selective cut

CUT_EVERY = 100  # 1% pass


def _cut(arrays):
    return arrays["evt"] % CUT_EVERY == 0


def scenario_selective_cut(bench: Bench) -> Section:
    n = bench.sizes.records
    expected = (n + CUT_EVERY - 1) // CUT_EVERY
    xrd, flight = bench.xrootd_peer(), bench.flight_peer()
    dds_t, base_t, ak_t, xrd_t, fl_t = [], [], [], [], []
    for _ in range(bench.sizes.repeat):
        t, got, nbytes, wire = _read_dds(bench, expected, BIG_BATCH, selection=f"evt % {CUT_EVERY} == 0")
        dds_t.append(t)
        t, bgot, _b = _read_uproot_np(bench.flat_path, cut=_cut)
        base_t.append(t)
        t, agot, _b = _read_uproot(bench.flat_path, BIG_BATCH, cut=_cut)
        ak_t.append(t)
        t, xgot, _b = xrd.read(BIG_BATCH, CUT_EVERY)
        xrd_t.append(t)
        t, fgot, fbytes = flight.read(bench.flat_path, BIG_BATCH, CUT_EVERY)
        fl_t.append(t)
    if {got, bgot, agot, xgot, fgot} != {expected}:
        raise RuntimeError(f"cut passed {got} records through DDS, {bgot}/{agot} locally, {xgot} through XRootD "
                           f"and {fgot} through Flight, expected {expected}")
    dds, base, akr = n / min(dds_t), n / min(base_t), n / min(ak_t)
    xrr, flr = n / min(xrd_t), n / min(fl_t)
    r = ratio(dds, base)
    wire_share = wire / bench.flat_size
    rows = [
        [f"DDS next_batch({BIG_BATCH}), selection on the server", fmt_rate(dds), f"{got:,}", f"{wire / 1e6:.2f} MB",
         f"{min(dds_t):.3f}", f"{r:.2f}"],
        ["uproot.iterate(library='np') + numpy mask, local (baseline)", fmt_rate(base), f"{bgot:,}",
         f"{bench.flat_size / 1e6:.2f} MB (file)", f"{min(base_t):.3f}", "1.00"],
        ["uproot.iterate(library='ak') + awkward mask, local", fmt_rate(akr), f"{agot:,}",
         f"{bench.flat_size / 1e6:.2f} MB (file)", f"{min(ak_t):.3f}", f"{ratio(akr, base):.2f}"],
        ["peer: uproot.iterate(library='np') through XRootD on loopback + numpy mask", fmt_rate(xrr), f"{xgot:,}",
         f"{bench.flat_size / 1e6:.2f} MB (file)", f"{min(xrd_t):.3f}", f"{ratio(xrr, base):.2f}"],
        ["peer: Arrow Flight server, numpy mask before sending", fmt_rate(flr), f"{fgot:,}",
         f"{fbytes / 1e6:.2f} MB (batches)", f"{min(fl_t):.3f}", f"{ratio(flr, base):.2f}"],
    ]
    sec = Section(
        "2", f"Selective cut (1% pass: evt % {CUT_EVERY} == 0)",
        ["reader", "records scanned/s", "records passed", "bytes moved", "best s", "ratio"], rows,
        notes=[f"Rates count every record scanned ({n:,}). DDS sends {wire_share:.1%} of the file's bytes "
               f"over the wire; the local reader has to have the whole file, and so has uproot through XRootD. "
               f"The peers are those of scenario 1: the XRootD reader applies the same numpy mask after reading, "
               f"the Flight server applies it to each step before making its record batch."],
    )
    sec.notes.append(_cpu_note(bench, n, expected, f"evt % {CUT_EVERY} == 0", _cut))
    sec.summary.append(Summary("2. selective cut (1%)", fmt_rate(dds), f"uproot numpy + mask {fmt_rate(base)}", r,
                               ">= 1.0", r >= 1.0))
    sec.summary.append(Summary("2. selective cut (1%) vs uproot through XRootD + mask", fmt_rate(dds),
                               f"uproot over XRootD on loopback {fmt_rate(xrr)}", ratio(dds, xrr), "(reported)",
                               None))
    sec.summary.append(Summary("2. selective cut (1%) vs an Arrow Flight server cutting", fmt_rate(dds),
                               f"Flight (uproot numpy + mask) {fmt_rate(flr)}", ratio(dds, flr), "(reported)", None))
    sec.summary.append(Summary("2. bytes on the wire / file bytes", f"{wire / 1e6:.2f} MB",
                               f"file {bench.flat_size / 1e6:.1f} MB", wire_share, "(reported)", None))
    _add_selection_speed(sec, bench.sizes.repeat)
    return sec


def _add_selection_speed(sec: Section, repeat: int) -> None:
    """The in-process cost of a selection: evaluating a small chunk, refusing hostile text."""
    timings = selection_speed.measure(repeat)
    short = selection_speed.fmt_short
    lines = [f"The cost of one selection call in-process, no server (bench/selection_speed.py, cut "
             f"`{selection_speed.CUT}`), best of {repeat} timings:", "",
             "| call | time | baseline | target |", "|---|---|---|---|"]
    for t in timings:
        lines.append(f"| {t.name} | {short(t.seconds)} | {t.baseline} | < {short(t.target_seconds)} |")
        sec.summary.append(Summary(f"2. selection: {t.name}", short(t.seconds), t.baseline,
                                   ratio(t.seconds, t.baseline_seconds), f"< {short(t.target_seconds)}", t.met))
    sec.notes.append("\n".join(lines))


# --------------------------------------------------------------------------- 3. next()


def _read_next(bench: Bench, n: int, prefetch: int) -> float:
    with bench.subscribed(prefetch=prefetch) as c:
        t0 = time.perf_counter()
        for _ in range(n):
            c.next(timeout=30)
        return time.perf_counter() - t0


def scenario_single_record(bench: Bench) -> Section:
    s = bench.sizes
    reps = max(1, s.repeat - 1)
    t_pf = min(_read_next(bench, s.next_records, 256) for _ in range(reps))
    t_rt = min(_read_next(bench, s.next_records_rt, 1) for _ in range(reps))
    m = min(s.records, 20 * s.next_records)
    t_batch = min(_read_dds(bench, m)[0] for _ in range(reps))
    pf, rt, batch = s.next_records / t_pf, s.next_records_rt / t_rt, m / t_batch
    rows = [
        ["next(), prefetch=256 (default)", fmt_rate(pf), f"{s.next_records:,}", f"{1e6 / pf:.1f} us",
         f"{ratio(pf, batch):.2g}"],
        ["next(), prefetch=1 (one round trip each)", fmt_rate(rt), f"{s.next_records_rt:,}", f"{1e6 / rt:.1f} us",
         f"{ratio(rt, batch):.2g}"],
        ["next_batch(10000)", fmt_rate(batch), f"{m:,}", f"{1e6 / batch:.2f} us", "1.000"],
    ]
    sec = Section("3", "Single-record next()", ["call", "records/s", "records", "per record", "ratio to next_batch"],
                  rows, notes=["next() returns each record as Python values (a RecordSet of dicts); next_batch "
                               f"returns columns. Best of {reps} runs."])
    sec.summary.append(Summary("3. next(), prefetch 256", fmt_rate(pf), f"next_batch {fmt_rate(batch)}",
                               ratio(pf, batch), ">= 200 k/s absolute", pf >= 200_000))
    sec.summary.append(Summary("3. next(), prefetch 1 (round trip)", fmt_rate(rt), f"next_batch {fmt_rate(batch)}",
                               ratio(rt, batch), "(reported)", None))
    return sec


# --------------------------------------------------------------------------- 4. live latency


def scenario_live_latency(bench: Bench) -> Section:
    """bench.latency does the measuring (writer, readers, local poller); this puts it in the tables."""
    from . import latency

    lat = latency.measure_latency(bench.workdir / "latency", bench.sizes.latency_seconds)
    rows = []
    for name, label in (("all", "DDS next(), keep_up='all'"), ("record", "DDS next(), keep_up='record'"),
                        ("local", "local uproot poller (baseline)")):
        v = lat[name]
        if not v:
            raise RuntimeError(f"no live record received by the {name} reader")
        rows.append([label, f"{len(v):,}", fmt_ms(median(v)), fmt_ms(percentile(v, 99)), fmt_ms(max(v))])
    base50, base99 = median(lat["local"]), percentile(lat["local"], 99)
    problems = [p for p in latency.check(lat) if "p50" not in p and "p99" not in p and "core" not in p]
    sec = Section("4", "Live latency: append to receive", ["reader", "records", "p50", "p99", "max"], rows,
                  notes=[f"bench.latency: a writer process appends one record every {lat['interval'] * 1e3:g} ms "
                         f"with uproot ({lat['appends']:,} appends per reader, two file rotations), stamping the "
                         f"wall-clock time into each record just before the append; the reader subtracts it from "
                         f"the time it receives the record. The baseline polls the files itself every "
                         f"{lat['poll_interval'] * 1e3:g} ms (the server's poll interval), re-opens a file that "
                         f"changed and reads its new entries. An idle child waiting in next() used "
                         f"{lat['cpu_share']:.1%} of a core."]
                  + [f"Problem: {p}." for p in problems])
    for mode in ("all", "record"):
        v = lat[mode]
        p50, p99 = median(v), percentile(v, 99)
        sec.summary.append(Summary(f"4. live latency, {mode}, p50", fmt_ms(p50), f"local poller {fmt_ms(base50)}",
                                   ratio(p50, base50), "< 50 ms", p50 < latency.P50_TARGET and not problems))
        sec.summary.append(Summary(f"4. live latency, {mode}, p99", fmt_ms(p99), f"local poller {fmt_ms(base99)}",
                                   ratio(p99, base99), "< 250 ms", p99 < latency.P99_TARGET and not problems))
    sec.summary.append(Summary("4. idle child waiting in next()", f"{lat['cpu_share']:.1%} of a core", "—",
                               math.nan, "< 10% of a core", lat["cpu_share"] < latency.CPU_TARGET))
    return sec


# --------------------------------------------------------------------------- 5. fan-out


def _fanout_dds(host, port, ready, go, start_stop, out, release):
    from clients import DDSClient, Subscription

    n = 0
    try:
        c = DDSClient(host, port)
        c.subscribe(Subscription(streams=[STREAM], keep_up="all", start=FLAT_FILE))
        ready.put(os.getpid())
        go.wait(60)
        start, stop = start_stop[0], start_stop[1]
        while time.time() < start:
            time.sleep(0.001)
        while time.time() < stop:
            b = c.next_batch(BATCH, timeout=30)
            if b.file != FLAT_FILE:
                c.go_to_file(FLAT_FILE)
                continue
            n += len(b)
        out.put(n)
        release.wait(120)  # connected, so that the serving child's memory can be read
        c.close()
    except BaseException as exc:  # report, never hang the runner
        ready.put(-1)
        out.put(f"{type(exc).__name__}: {exc}")


def _fanout_uproot(path, _port, ready, go, start_stop, out, release):
    import uproot

    n = 0
    try:
        tree = uproot.open(path)[STREAM]
        ready.put(os.getpid())
        go.wait(60)
        start, stop = start_stop[0], start_stop[1]
        while time.time() < start:
            time.sleep(0.001)
        while time.time() < stop:
            for arrays in tree.iterate(step_size=BATCH, library="np"):  # the fastest local path
                n += len(arrays["evt"])
                if time.time() >= stop:
                    break
        out.put(n)
        release.wait(120)
    except BaseException as exc:
        ready.put(-1)
        out.put(f"{type(exc).__name__}: {exc}")


def _run_clients(target, arg0, arg1, k: int, seconds: float, measured=None) -> tuple[list[int], list[int]]:
    """Start k processes running ``target``; all read for the same ``seconds``.

    Returns their record counts and the PSS (kB) of each process ``measured(reader pids)`` names
    (default: the readers themselves), read from /proc once every reader is done but before any lets
    go (a DDS client stays connected, so its serving child is still there with what it used). While
    all of them read, every core is busy and reading /proc takes longer than the reading itself.
    """
    ctx = multiprocessing.get_context("fork")
    ready, out, go, release = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
    start_stop = ctx.Array("d", 2)
    procs = [ctx.Process(target=target, args=(arg0, arg1, ready, go, start_stop, out, release), daemon=True)
             for _ in range(k)]
    for p in procs:
        p.start()
    try:
        pids = [ready.get(timeout=120) for _ in range(k)]
        start_stop[0] = time.time() + 0.1
        start_stop[1] = start_stop[0] + seconds
        go.set()
        counts = [out.get(timeout=seconds + 120) for _ in range(k)]
        ok = -1 not in pids and all(isinstance(c, int) for c in counts)
        pss = [kb for kb in map(common.pss_kb, (measured or list)(pids)) if kb is not None] if ok else []
    finally:
        release.set()
        common.end_processes(procs)
    bad = [c for c in counts if not isinstance(c, int)]
    if bad:
        raise RuntimeError(f"a fan-out client failed: {bad[0]}")
    return counts, pss


def _fmt_pss(kb: list[int]) -> str:
    if not kb:
        return "—"
    return f"{sum(kb) / len(kb) / 1024:.0f} MB ({max(kb) / 1024:.0f} MB)"


def scenario_fanout(bench: Bench) -> Section:
    s = bench.sizes
    rows, summary = [], []
    single = None
    server = bench.server
    for k in s.fanout:
        dds, dds_pss = _run_clients(_fanout_dds, server.host, server.port, k, s.fanout_seconds,
                                    measured=lambda _readers: common.children_of(server.pid))
        loc, loc_pss = _run_clients(_fanout_uproot, bench.flat_path, 0, k, s.fanout_seconds)
        if len(dds_pss) < k:
            raise RuntimeError(f"PSS read for {len(dds_pss)} of {k} serving children "
                               f"(no /proc/PID/smaps_rollup, or the children ended early)")
        agg, lagg = sum(dds) / s.fanout_seconds, sum(loc) / s.fanout_seconds
        share = min(dds) / (sum(dds) / k)
        lshare = min(loc) / (sum(loc) / k)
        if single is None:
            single = agg
        rows.append([str(k), fmt_rate(agg), f"{share:.2f}", f"{ratio(agg, single):.2f}", _fmt_pss(dds_pss),
                     fmt_rate(lagg), f"{lshare:.2f}", _fmt_pss(loc_pss), f"{ratio(agg, lagg):.2f}"])
        clients, readers = ("client", "reader") if k == 1 else ("clients", "readers")
        want = 0.6 if k == 32 else 0.5  # the target at 32 clients is higher
        summary.append(Summary(f"5. fan-out, {k} {clients}: aggregate", fmt_rate(agg),
                               f"{k} local uproot {readers} {fmt_rate(lagg)}", ratio(agg, lagg), f">= {want}",
                               ratio(agg, lagg) >= want))
        if k > 1:
            summary.append(Summary(f"5. fan-out, {k} clients: slowest share", f"{share:.2f} of fair share",
                                   f"local readers {lshare:.2f}", ratio(share, lshare), "share >= 0.5",
                                   share >= 0.5))
        if k == max(s.fanout):
            mean, lmean = sum(dds_pss) / len(dds_pss), sum(loc_pss) / max(1, len(loc_pss))
            summary.append(Summary(f"5. fan-out, {k} {clients}: PSS per serving child, mean (max)",
                                   _fmt_pss(dds_pss), f"per local reader {_fmt_pss(loc_pss)}", ratio(mean, lmean),
                                   "(reported)", None))
    sec = Section(
        "5", "Fan-out: concurrent clients on the same data",
        ["clients", "DDS aggregate records/s", "slowest client's share", "vs 1 client",
         "PSS per serving child, mean (max)", "local uproot readers", "their slowest share",
         "PSS per local reader, mean (max)", "DDS / local"], rows, summary=summary,
        notes=[f"Each client is its own process (fork) reading next_batch(10000) from the same closed file for "
               f"{s.fanout_seconds:g} s, all starting together; server started with -m {bench.max_clients}. "
               f"'Slowest client's share' is the slowest client's records over the mean (1.00 is perfectly fair). "
               f"The local baseline is the same number of processes each running uproot's iterate over the file "
               f"(numpy arrays, step 10000). "
               f"PSS (proportional set size: each shared page divided among the processes that map it) is read "
               f"from /proc/PID/smaps_rollup of every serving child, and of every local reader, right after the "
               f"reading while every client is still connected; the local readers are forks of the bench "
               f"process, so they share its pages. "
               f"The machine has {os.cpu_count()} cores: aggregate throughput cannot grow beyond them."],
    )
    return sec


# --------------------------------------------------------------------------- 6. connection cost


def scenario_connection(bench: Bench) -> Section:
    import uproot

    from clients import DDSClient, Subscription

    s = bench.sizes
    server, daq = bench.daq_server()
    phases = {"connect (fork, greeting)": [], "subscribe": [], "first next()": [], "total": []}
    for _ in range(s.connections):
        t0 = time.perf_counter()
        c = DDSClient(server.host, server.port)
        t1 = time.perf_counter()
        c.subscribe(Subscription(streams=[STREAM], keep_up="all", start="current"))
        t2 = time.perf_counter()
        c.next(timeout=30)
        t3 = time.perf_counter()
        c.close()
        for key, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            phases[key].append(dt)
    local = []
    for _ in range(s.connections):
        t0 = time.perf_counter()
        with uproot.open(daq) as f:
            f[STREAM].arrays(entry_stop=1)
        local.append(time.perf_counter() - t0)
    rows = [[name, fmt_ms(median(v)), fmt_ms(percentile(v, 99))] for name, v in phases.items()]
    rows.append(["local: uproot.open + first entry", fmt_ms(median(local)), fmt_ms(percentile(local, 99))])
    tot = phases["total"]
    p50, p99 = median(tot), percentile(tot, 99)
    sec = Section("6", "Connection: connect + subscribe + first record", ["phase", "p50", "p99"], rows,
                  notes=[f"{s.connections} connections one after the other to one server, each subscribing to "
                         f"DaqSnarl with start='current' in a directory holding a file written by demo.daqsim "
                         f"(three trees, one small basket per 50 ms append, as the DAQ writes), and taking one "
                         f"next(). 'connect' includes "
                         f"the fork of the child and the greeting. "
                         f"The local baseline opens the same file with uproot in an already warm process and "
                         f"reads its first entry. Targets: p50 < 30 ms, p99 < 100 ms. The first reply of next() holds "
                         f"at most 32 record sets (one short read); the rest stream in while the client uses them."])
    sec.summary.append(Summary("6. connect+subscribe+first record, p50", fmt_ms(p50),
                               f"local open+read {fmt_ms(median(local))}", ratio(p50, median(local)), "< 30 ms",
                               p50 < 0.030))
    sec.summary.append(Summary("6. connect+subscribe+first record, p99", fmt_ms(p99),
                               f"local open+read p99 {fmt_ms(percentile(local, 99))}",
                               ratio(p99, percentile(local, 99)), "< 100 ms", p99 < 0.100))
    return sec


# --------------------------------------------------------------------------- 7. memory


def _child_of(server: ServerProc, before: set) -> int | None:
    new = [p for p in server.children() if p not in before]
    return new[0] if new else None


def _serve_and_measure(bench: Bench, name: str, records: int) -> tuple[int, float, float]:
    """Read file ``name`` to its end through one client; (child peak RSS kB, seconds, MB/s)."""
    server = bench.server
    before = set(server.children())
    with bench.subscribed(start=name) as c:
        pid = None
        for _ in range(200):
            pid = _child_of(server, before)
            if pid:
                break
            time.sleep(0.01)
        dt, got, nbytes = _drain_file(c, name, BATCH, records, timeout=60)
        peak = proc_status(pid).get("VmHWM", -1) if pid else -1
    if got != records:
        raise RuntimeError(f"served {got} records of {name}, expected {records}")
    return peak, dt, nbytes / dt


def scenario_memory(bench: Bench) -> Section:
    s = bench.sizes
    free = shutil.disk_usage(bench.workdir).free
    big_mb = s.mem_big_mb
    note_size = ""
    if free < 3 * big_mb * 2**20:
        big_mb = max(s.mem_small_mb * 2, int(free / 3 / 2**20))
        note_size = f" Only {free / 2**30:.1f} GB free on disk: the big file was shrunk to {big_mb} MB."
    files = {}
    t0 = time.perf_counter()
    for tag, mb in (("small", s.mem_small_mb), ("big", big_mb)):
        name = f"F0500_{tag}_{mb}MB.root"
        n, size = common.write_wide(bench.data / name, mb * 2**20)
        files[tag] = (name, n, size)
    t_write = time.perf_counter() - t0
    rows = []
    peaks = {}
    try:
        for tag in ("small", "big"):
            name, n, size = files[tag]
            peak, dt, mbs = _serve_and_measure(bench, name, n)
            peaks[tag] = peak
            rows.append([f"child serving {size / 1e6:,.0f} MB ({n:,} records)", f"{peak / 1024:.0f} MB",
                         f"{dt:.1f} s, {fmt_mb(mbs)}"])
    finally:
        for name, _, _ in files.values():
            try:
                os.unlink(bench.data / name)
            except OSError:
                pass
    # the parent across many connections
    server = bench.server
    marks = sorted({0, s.parent_connections // 10, s.parent_connections // 2, s.parent_connections})
    samples = {}
    for i in range(s.parent_connections + 1):
        if i in marks:
            st = proc_status(server.pid)
            samples[i] = (st.get("VmRSS", -1), common.open_fds(server.pid))
        if i < s.parent_connections:
            bench.client().close()
    base_i = marks[1] if len(marks) > 1 else 0
    for i in marks:
        rss, fds = samples[i]
        rows.append([f"parent after {i:,} connections", f"{rss / 1024:.1f} MB", f"{fds} open descriptors"])
    sm, bg = peaks["small"], peaks["big"]
    p_first, p_last = samples[base_i][0], samples[marks[-1]][0]
    sec = Section("7", "Memory", ["process", "peak RSS (VmHWM) / RSS", "notes"], rows,
                  notes=[f"Files of 16 random float64 branches (incompressible), written in {t_write:.0f} s and "
                         f"deleted afterwards; each served to its end by one client with next_batch(10000). "
                         f"Peak RSS is the child's VmHWM from /proc while its client is still connected. "
                         f"The parent's RSS is sampled while {s.parent_connections:,} clients connect and leave "
                         f"one after the other (growth is measured from connection {base_i}, after warm-up)."
                         + note_size
                         + ("" if s.mode == "full" else f" ({s.mode} sizes: the full run compares files of about "
                                                        f"100 MB and 1 GB.)")])
    big_size, small_size = files["big"][2], files["small"][2]
    sec.summary.append(Summary(f"7. child peak RSS, {big_size / 1e6:,.0f} MB file", f"{bg / 1024:.0f} MB",
                               f"{small_size / 1e6:,.0f} MB file: {sm / 1024:.0f} MB", ratio(bg, sm), "<= 1.25 (flat)",
                               ratio(bg, sm) <= 1.25))
    sec.summary.append(Summary(f"7. parent RSS after {s.parent_connections:,} connections",
                               f"{p_last / 1024:.1f} MB", f"after {base_i}: {p_first / 1024:.1f} MB",
                               ratio(p_last, p_first), "<= 1.10 (flat)", ratio(p_last, p_first) <= 1.10))
    return sec


# --------------------------------------------------------------------------- 8. raw transport


def _raw_sender(port: int, columns: dict, batch: int, rounds: int) -> None:
    """A minimal sender: per batch, an 8-byte length and the column slices, nothing else."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    n = len(next(iter(columns.values())))
    for _ in range(rounds):
        for start in range(0, n, batch):
            views = [memoryview(np.ascontiguousarray(c[start:start + batch])).cast("B") for c in columns.values()]
            total = sum(v.nbytes for v in views)
            common.send_all(sock, [total.to_bytes(8, "little"), *views])
    sock.close()


def _raw_receive(conn: socket.socket, dtypes: list) -> tuple[int, int]:
    got = nbytes = 0
    head = bytearray(8)
    while True:
        if not common.recv_exact(conn, memoryview(head)):
            return got, nbytes
        total = int.from_bytes(head, "little")
        buf = bytearray(total)
        common.recv_exact(conn, memoryview(buf))
        per = sum(np.dtype(d).itemsize for d in dtypes)
        k = total // per
        pos = 0
        for d in dtypes:  # view the columns in place, as a real receiver would
            size = k * np.dtype(d).itemsize
            np.frombuffer(buf, dtype=d, count=k, offset=pos)
            pos += size
        got += k
        nbytes += total


def _raw_run(columns: dict, rounds: int) -> tuple[float, int, int]:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_raw_sender, args=(port, columns, BATCH, rounds), daemon=True)
    t0 = time.perf_counter()
    p.start()
    conn, _ = lst.accept()
    lst.close()
    with conn:
        got, nbytes = _raw_receive(conn, [c.dtype for c in columns.values()])
    dt = time.perf_counter() - t0
    p.join(30)
    return dt, got, nbytes


def _proto_sender(port: int, arrays, batch: int) -> None:
    """DDS framing and columnar encoding over a plain socket, from arrays already in memory."""
    from dispatcher.columnar import Part, encode_parts
    from dispatcher.protocol import Connection
    from dispatcher.transport import send_message

    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Connection("server")
    n = len(arrays)
    entries = np.arange(n, dtype=np.int64)
    for start in range(0, n, batch):
        conn.state = "BUSY"  # one reply per (imagined) request
        msg = encode_parts([Part(STREAM, FLAT_FILE, entries[start:start + batch], arrays[start:start + batch])])
        send_message(sock, conn, msg)
    sock.close()


def _proto_run(arrays) -> tuple[float, int]:
    from dispatcher.columnar import decode_parts
    from dispatcher.protocol import Connection
    from dispatcher.transport import recv_message

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    port = lst.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_proto_sender, args=(port, arrays, BATCH), daemon=True)
    t0 = time.perf_counter()
    p.start()
    sock, _ = lst.accept()
    lst.close()
    got = 0
    conn = Connection("client")
    with sock:
        while got < len(arrays):
            conn.state = "BUSY"
            msg = recv_message(sock, conn, 60)
            got += sum(len(part.arrays) for part in decode_parts(msg))
    dt = time.perf_counter() - t0
    p.join(30)
    return dt, got


def scenario_raw_transport(bench: Bench) -> Section:
    import uproot

    arrays = uproot.open(bench.flat_path)[STREAM].arrays(library="ak")
    columns = {k: np.asarray(arrays[k]) for k in arrays.fields}
    n = len(arrays)
    reps = bench.sizes.repeat
    raw = min(_raw_run(columns, 1)[0] for _ in range(reps))
    proto = min(_proto_run(arrays)[0] for _ in range(reps))
    nbytes = sum(c.nbytes for c in columns.values())
    dds_mbs = bench.results.get("all_mbs")
    if dds_mbs is None:
        dds_mbs = nbytes / min(_read_dds(bench, n)[0] for _ in range(reps))
    raw_mbs, proto_mbs = nbytes / raw, nbytes / proto
    rows = [
        ["plain TCP socket, minimal sender (no DDS)", fmt_mb(raw_mbs), fmt_rate(n / raw), "1.00"],
        ["DDS frames + columnar encode/decode, arrays in memory", fmt_mb(proto_mbs), fmt_rate(n / proto),
         f"{ratio(proto_mbs, raw_mbs):.2f}"],
        ["DDS end to end (scenario 1: file read, session, protocol)", fmt_mb(dds_mbs),
         fmt_rate(dds_mbs / common.FLAT_RECORD_BYTES), f"{ratio(dds_mbs, raw_mbs):.2f}"],
    ]
    sec = Section("8", "Raw transport ceiling", ["path", "MB/s (record bytes)", "records/s", "ratio to plain TCP"],
                  rows, notes=[f"The same {n:,} records ({nbytes / 1e6:.0f} MB of column data) in batches of "
                               f"{BATCH:,} over loopback, sender in its own process. Best of {reps}."])
    sec.summary.append(Summary("8. DDS protocol / plain TCP", fmt_mb(proto_mbs), f"plain TCP {fmt_mb(raw_mbs)}",
                               ratio(proto_mbs, raw_mbs), "(reported)", None))
    sec.summary.append(Summary("8. DDS end to end / plain TCP", fmt_mb(dds_mbs), f"plain TCP {fmt_mb(raw_mbs)}",
                               ratio(dds_mbs, raw_mbs), "(reported)", None))
    return sec


# --------------------------------------------------------------------------- the list

SCENARIOS = [
    ("1", "all", scenario_all_records),
    ("2", "cut", scenario_selective_cut),
    ("3", "next", scenario_single_record),
    ("4", "latency", scenario_live_latency),
    ("5", "fanout", scenario_fanout),
    ("6", "connect", scenario_connection),
    ("7", "memory", scenario_memory),
    ("8", "raw", scenario_raw_transport),
    ("9", "groups", lambda bench: _groups().scenario_groups(bench)),
    ("10", "growth", lambda bench: _growth().scenario_growing_file(bench)),
]


def _groups():
    from . import groups  # it imports this module's helpers

    return groups


def _growth():
    from . import growth  # it imports this module's helpers

    return growth
