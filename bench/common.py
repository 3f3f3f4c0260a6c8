"""What every benchmark scenario needs: data files, a server process, timing and /proc readings.

The machine the benchmarks run on is usually shared, so every figure is taken
as the best (throughput) or the median (latency) of several repeats, and always
next to a baseline measured in the same run.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

import numpy as np

STREAM = "DaqSnarl"
BIN = Path(sys.executable).parent
#: uncompressed bytes per record of the flat benchmark stream (see flat_columns)
FLAT_RECORD_BYTES = 8 + 4 + 8 + 4 + 8


# --------------------------------------------------------------------------- data


def flat_columns(first: int, n: int, seed: int = 0) -> dict:
    """A flat five-branch stream: evt counts up from ``first``; the rest is random."""
    rng = np.random.default_rng(seed + first)
    return {
        "evt": np.arange(first, first + n, dtype=np.int64),
        "kind": rng.integers(0, 4, n).astype(np.int32),
        "energy": rng.exponential(10.0, n),
        "nhits": rng.poisson(30, n).astype(np.int32),
        "x": rng.random(n),
    }


def write_flat(path, n: int, *, step: int = 100_000, seed: int = 0, compression="default") -> int:
    """Write ``n`` records of the flat stream to a ROOT file in extends of ``step``; returns the file size."""
    import uproot

    kw = {} if compression == "default" else {"compression": compression}
    with uproot.recreate(str(path), **kw) as f:
        tree = None
        for first in range(0, n, step):
            cols = flat_columns(first, min(step, n - first), seed)
            if tree is None:
                tree = f.mktree(STREAM, {k: v.dtype for k, v in cols.items()})
            tree.extend(cols)
    return os.path.getsize(path)


def write_wide(path, target_bytes: int, *, branches: int = 16, step: int = 200_000, seed: int = 0) -> tuple[int, int]:
    """Write random float64 records (``branches`` wide) until the file holds ``target_bytes``.

    Random floats do not compress, so the file really is that big. Returns (records, file size).
    """
    import uproot

    rng = np.random.default_rng(seed)
    per = 8 * branches
    n = max(1, target_bytes // per)
    step = min(step, n)
    names = ["evt"] + [f"f{i:02d}" for i in range(branches - 1)]
    with uproot.recreate(str(path)) as f:
        tree = f.mktree(STREAM, {k: np.int64 if k == "evt" else np.float64 for k in names})
        for first in range(0, n, step):
            m = min(step, n - first)
            cols = {"evt": np.arange(first, first + m, dtype=np.int64)}
            block = rng.random((branches - 1, m))
            for i, k in enumerate(names[1:]):
                cols[k] = block[i]
            tree.extend(cols)
    return n, os.path.getsize(path)


def close_with_tail(data_dir, name: str) -> str:
    """Make ``name`` a closed file by adding a small later file; returns the tail file's name."""
    tail = name.replace(".root", "_z_tail.root")
    write_flat(Path(data_dir) / tail, 10, seed=99)
    return tail


# --------------------------------------------------------------------------- measuring


def best_of(fn, repeat: int):
    """Run ``fn`` ``repeat`` times; returns (best seconds, all seconds, last result)."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), times, result


def percentile(values, q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def median(values) -> float:
    return float(statistics.median(values))


def proc_status(pid: int) -> dict:
    """Fields of /proc/PID/status in kB (VmRSS, VmHWM, ...)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0])
    except OSError:
        pass
    return out


def pss_kb(pid: int) -> int | None:
    """Proportional set size of ``pid`` in kB (shared pages divided among their users), from
    /proc/PID/smaps_rollup; None once it is gone or where the kernel has no such file."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is ``pid``, from every /proc/N/stat (/proc/PID/task/PID/children can miss
    children while they run, as the kernel's documentation warns)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(name))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (from /proc); NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


_TCP_INFO_BYTES_RECEIVED = 128  # offset of tcpi_bytes_received in struct tcp_info (Linux >= 4.1)


def bytes_received(sock: socket.socket) -> int | None:
    """Payload bytes this TCP socket has received so far, from the kernel (None if unknown)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(info) < _TCP_INFO_BYTES_RECEIVED + 8:
        return None
    return struct.unpack_from("Q", info, _TCP_INFO_BYTES_RECEIVED)[0]


# --------------------------------------------------------------------------- the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    import awkward
    import uproot

    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "uproot": uproot.__version__,
        "awkward": awkward.__version__,
        "numpy": np.__version__,
        "kernel": platform.release(),
        "load": load,
    }


# --------------------------------------------------------------------------- plain sockets


def send_all(sock: socket.socket, chunks) -> None:
    """Write every chunk with scatter-gather sends, no joining."""
    views = [memoryview(c).cast("B") for c in chunks]
    while views:
        sent = sock.sendmsg(views[:512])
        while sent:
            if sent >= views[0].nbytes:
                sent -= views[0].nbytes
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0


def recv_exact(sock: socket.socket, view: memoryview) -> bool:
    """Fill ``view`` from the socket; False if the peer closed before the first byte."""
    pos = 0
    while pos < len(view):
        k = sock.recv_into(view[pos:])
        if not k:
            if pos == 0:
                return False
            raise ConnectionError("peer closed in the middle of a frame")
        pos += k
    return True


def end_processes(procs) -> None:
    """Wait a little for each ``multiprocessing`` process to end; kill the ones that do not."""
    for p in procs:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
            p.join(5)
