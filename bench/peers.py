"""What a user could run instead of DDS, and the machine's own limits, measured beside DDS in one run.

- :class:`XRootDPeer`: a real XRootD server on loopback exporting a copy of the file;
  the peer reader is uproot's ``iterate`` on its ``root://`` URL (numpy arrays,
  uproot's default handler for the scheme).
- :class:`FlightPeer`: an Arrow Flight server in its own process that reads the
  file with uproot (numpy arrays, a numpy mask for a cut) and streams record
  batches of the same columns; the peer reader is a Flight client taking them all.
- :func:`read_page_cache` and :func:`read_loopback`: the file's bytes read back
  from the page cache, and the column bytes sent over a plain TCP socket on
  loopback, the ceilings under every reader.

    python -m bench.peers flight   # the Flight server FlightPeer starts: prints its port, serves until killed
"""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import common
from .common import STREAM

ROOT = Path(__file__).resolve().parent.parent
READ_CHUNK = 4 * 2**20


# --------------------------------------------------------------------------- the readers


def read_uproot_np(url: str, step: int, cut_every: int = 0) -> tuple[float, int, int]:
    """uproot.iterate(library="np") over ``url`` (a path or a root:// URL), with ``evt % cut_every == 0``
    applied as a numpy mask when ``cut_every``; (seconds, records passed, column bytes passed)."""
    import uproot

    got = nbytes = 0
    t0 = time.perf_counter()
    for arrays in uproot.iterate(f"{url}:{STREAM}", step_size=step, library="np"):
        if cut_every:
            mask = arrays["evt"] % cut_every == 0
            arrays = {k: v[mask] for k, v in arrays.items()}
        got += len(arrays["evt"])
        nbytes += sum(v.nbytes for v in arrays.values())
    return time.perf_counter() - t0, got, nbytes


def read_page_cache(path: str) -> tuple[float, int]:
    """Read every byte of the file (already in the page cache) into one reused buffer; (seconds, bytes)."""
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(view):
            total += k
    return time.perf_counter() - t0, total


def _loopback_sender(port: int, columns: dict, batch: int) -> None:
    """After the receiver's go byte, per batch an 8-byte length and the column slices, nothing else."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.recv(1)
    n = len(next(iter(columns.values())))
    for start in range(0, n, batch):
        views = [memoryview(np.ascontiguousarray(c[start:start + batch])).cast("B") for c in columns.values()]
        common.send_all(sock, [sum(v.nbytes for v in views).to_bytes(8, "little"), *views])
    sock.close()


def read_loopback(columns: dict, batch: int) -> tuple[float, int]:
    """The columns sent over plain TCP on 127.0.0.1 by a forked sender, received into fresh buffers;
    (seconds from the go byte sent to the connected sender to the last byte received, bytes)."""
    lst = socket.create_server(("127.0.0.1", 0))
    port = lst.getsockname()[1]
    p = multiprocessing.get_context("fork").Process(target=_loopback_sender, args=(port, columns, batch),
                                                      daemon=True)
    p.start()
    try:
        lst.settimeout(30)
        conn, _ = lst.accept()
        lst.close()
        total = 0
        head = bytearray(8)
        with conn:
            conn.settimeout(60)
            t0 = time.perf_counter()
            conn.sendall(b"g")
            while common.recv_exact(conn, memoryview(head)):
                buf = bytearray(int.from_bytes(head, "little"))
                common.recv_exact(conn, memoryview(buf))
                total += len(buf)
        dt = time.perf_counter() - t0
    finally:
        lst.close()
        p.join(30)
        if p.is_alive():
            p.kill()
            p.join(5)
    return dt, total


# --------------------------------------------------------------------------- XRootD


class XRootDPeer:
    """A real ``xrootd`` on 127.0.0.1 exporting a copy of ``path``; stopped (and the copy removed) by close().

    Args:
        path (str): the ROOT file to serve.

    Attributes:
        url (str): the copy's ``root://127.0.0.1:PORT//...`` URL.
    """

    def __init__(self, path: str):
        from dispatcher.testing import XRootDProc

        self._x = XRootDProc()
        try:
            dest = self._x.export / Path(path).name
            shutil.copyfile(path, dest)
            dest.chmod(0o644)  # xrootd runs as an unprivileged user when we are root
            self.url = f"{self._x.url}/{dest.name}"
            read_uproot_np(self.url, 2**20)  # first read: the copy in the page cache, the client library loaded
        except BaseException:
            self._x.close()
            raise

    @property
    def pid(self) -> int:
        return self._x.proc.pid

    def read(self, step: int, cut_every: int = 0) -> tuple[float, int, int]:
        """uproot.iterate through the server; as :func:`read_uproot_np`."""
        return read_uproot_np(self.url, step, cut_every)

    def close(self) -> None:
        self._x.close()


# --------------------------------------------------------------------------- Arrow Flight


def _flight_server() -> int:
    """Serve do_get tickets ``{"path", "step", "cut_every"}`` on a free port of 127.0.0.1 until killed."""
    import pyarrow as pa
    import pyarrow.flight as flight
    import uproot

    class Server(flight.FlightServerBase):
        def do_get(self, context, ticket):
            req = json.loads(ticket.ticket)
            step, cut_every = int(req["step"]), int(req.get("cut_every", 0))
            tree = uproot.open(req["path"])[STREAM]
            names = list(tree.keys())
            schema = pa.schema([(k, pa.from_numpy_dtype(tree[k].interpretation.to_dtype)) for k in names])

            def batches():
                for arrays in tree.iterate(names, step_size=step, library="np"):
                    if cut_every:
                        mask = arrays["evt"] % cut_every == 0
                        arrays = {k: v[mask] for k, v in arrays.items()}
                    yield pa.RecordBatch.from_arrays([pa.array(arrays[k]) for k in names], schema=schema)

            return flight.GeneratorStream(schema, batches())

    server = Server("grpc://127.0.0.1:0")
    print(server.port, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve()
    return 0


class FlightPeer:
    """``python -m bench.peers flight`` in its own process: an Arrow Flight server reading with uproot.

    Args:
        timeout (float): seconds to wait for it to print its port; default 60.

    Attributes:
        port (int): where it listens on 127.0.0.1.
    """

    def __init__(self, timeout: float = 60.0):
        try:
            import pyarrow.flight  # noqa: F401
        except ImportError as exc:
            raise RuntimeError("the Arrow Flight peer needs pyarrow: pip install '.[bench]'") from exc
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.peers", "flight"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            line = self.proc.stdout.readline() if ready else b""
            if not line.strip().isdigit():
                raise RuntimeError(f"the Flight server did not start (exit status {self.proc.poll()})")
            self.port = int(line)
            self._client = pyarrow.flight.connect(f"grpc://127.0.0.1:{self.port}")
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self, path: str, step: int, cut_every: int = 0) -> tuple[float, int, int]:
        """Every record batch of one do_get; (seconds from the request to the last batch, records, bytes)."""
        import pyarrow.flight as flight

        ticket = flight.Ticket(json.dumps({"path": str(path), "step": step, "cut_every": cut_every}).encode())
        got = nbytes = 0
        t0 = time.perf_counter()
        for chunk in self._client.do_get(ticket):
            got += chunk.data.num_rows
            nbytes += chunk.data.nbytes
        return time.perf_counter() - t0, got, nbytes

    def close(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()


if __name__ == "__main__":
    if sys.argv[1:] != ["flight"]:
        sys.exit("usage: python -m bench.peers flight")
    sys.exit(_flight_server())
