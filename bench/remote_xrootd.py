"""XRootD figures for ``python -m bench.remote``: DDS over XRootD against DDS on the local
directory and against uproot reading the same files through XRootD itself, the
append-to-receive latency through XRootD, and how many requests a read costs."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import uproot

from bench.remote import STREAM, make_daq_files, read_all
from dispatcher.testing import ServerProc, XRootDProc


def _uproot_direct(url_files: list[str]) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    for url in url_files:
        with uproot.open(url, handler=uproot.source.xrootd.XRootDSource) as f:
            n += len(f[STREAM].arrays(library="ak"))
    return n, time.perf_counter() - t0


def _latency(x: XRootDProc, log_dir: Path, samples: int = 60) -> list[float]:
    """Seconds from a DAQ extend (of one record) on the exported directory to the client having it."""
    from clients import DDSClient, Subscription

    path = x.export / "L0001_0000.root"
    written: dict[int, float] = {}
    with uproot.recreate(str(path)) as f:
        tree = f.mktree(STREAM, {"evt": np.int64, "t": np.float64})
        tree.extend({"evt": np.array([-1]), "t": np.array([0.0])})
        with ServerProc(x.url, "--poll-interval", "0.005", log_file=log_dir / "lat.log") as server, \
                DDSClient(server.host, server.port) as dds:
            dds.subscribe(Subscription(streams=[STREAM], keep_up="all", start="latest"))
            lags: list[float] = []

            def daq():
                for i in range(samples):
                    time.sleep(0.05)
                    written[i] = time.perf_counter()
                    tree.extend({"evt": np.array([i]), "t": np.array([0.0])})
                    f.file.sink.flush()

            w = threading.Thread(target=daq)
            w.start()
            while len(lags) < samples:
                rs = dds.next(timeout=10)
                got = time.perf_counter()
                evt = int(rs[STREAM]["evt"])
                if evt >= 0:
                    lags.append(got - written[evt])
            w.join()
    return lags


def xrootd_figures(snarls: int, work: Path) -> list[str]:
    lines = []
    with XRootDProc() as x:
        local = work / "local"
        local.mkdir()
        records = make_daq_files(local, snarls)
        for f in sorted(local.glob("*.root")):
            shutil.copy(f, x.export / f.name)
        files = sorted(p.name for p in x.export.glob("*.root"))
        rows = []
        with ServerProc(local, log_file=work / "local.log") as s_local, \
                ServerProc(x.url, log_file=work / "remote.log") as s_remote:
            read_all(s_local.port, None)
            read_all(s_remote.port, None)  # warm both: page cache, imports
            for label, fn in (
                ("DDS, local directory", lambda: read_all(s_local.port, None)),
                ("DDS, data directory on XRootD", lambda: read_all(s_remote.port, None)),
                ("uproot through XRootD directly (no DDS)", lambda: _uproot_direct([f"{x.url}/{n}" for n in files])),
            ):
                runs = [fn() for _ in range(3)]
                n, seconds = min(runs, key=lambda r: r[1])
                assert n == records, (label, n, records)
                rows.append(f"| {label} | {n / seconds:,.0f} | {seconds:.2f} |")
        lines += [f"DaqSnarl records: {records}, every branch, `next_batch(20000)`; best of 3", "",
                  "| reader | records/s | seconds |", "|---|---|---|", *rows, ""]
        lags = np.array(_latency(x, work)) * 1e3
        lines += ["Append-to-receive latency through XRootD (one record per extend, every 50 ms, "
                  f"server --poll-interval 0.005, {len(lags)} samples): p50 {np.percentile(lags, 50):.1f} ms, "
                  f"p99 {np.percentile(lags, 99):.1f} ms", ""]
        # requests per read: uproot's XRootD source batches the baskets of one read in one vector read
        with uproot.open(f"{x.url}/{files[0]}", handler=uproot.source.xrootd.XRootDSource) as f:
            tree = f[STREAM]
            before = f.file.source.num_requests
            tree.arrays(library="ak")
            requests = f.file.source.num_requests - before
            baskets = sum(b.num_baskets for b in tree.itervalues(recursive=True))
        lines += [f"One `arrays()` of a whole file ({baskets} baskets): {requests} XRootD requests (vector reads)"]
    return lines
