"""DDS for remote sites: a compressed wire over a throttled link, and data read through XRootD.

    python -m bench.remote                # both parts
    python -m bench.remote --only wire    # compression only
    python -m bench.remote --only xrootd  # XRootD only (needs the xrootd server and the XRootD bindings)

The wire part reads every DaqSnarl record of simulated DAQ files (``demo.daqsim``:
MINOS-like snarls with hit lists) with ``next_batch``, once per codec, directly on
loopback and through :class:`Relay`, a socket relay that passes the server's bytes
on at a fixed rate (a remote site's link), counting them.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from clients import DDSClient, DDSTimeout, Subscription
from dispatcher.testing import ServerProc

STREAM = "DaqSnarl"
CODECS = (None, "zstd", "lz4")


class Relay:
    """A TCP relay on 127.0.0.1 that forwards to ``target``, the server-to-client direction at ``rate`` bytes/s.

    Args:
        target (tuple): ``(host, port)`` to forward to.
        rate (float or None): bytes per second towards the client; None: as fast as it goes.

    Attributes:
        port (int): where clients connect.
        down_bytes (int): bytes passed from the server to clients so far.
    """

    CHUNK = 64 * 1024

    def __init__(self, target: tuple[str, int], rate: float | None):
        self.target, self.rate = target, rate
        self.down_bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.target)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks += [client, server]
            for src, dst, limited in ((client, server, False), (server, client, True)):
                t = threading.Thread(target=self._pump, args=(src, dst, limited), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, limited: bool) -> None:
        start, sent = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                data = src.recv(self.CHUNK)
                if not data:
                    break
                dst.sendall(data)
                if limited:
                    with self._lock:
                        self.down_bytes += len(data)
                    sent += len(data)
                    if self.rate:  # a token bucket of one chunk: sleep until the link would have carried it
                        ahead = start + sent / self.rate - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for s in self._socks:
            s.close()
        for t in self._threads:
            t.join(2)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_daq_files(data_dir: Path, snarls: int) -> int:
    """Closed simulated DAQ files holding about ``snarls`` DaqSnarl records; returns how many."""
    from demo.daqsim import DaqSimulator

    sim = DaqSimulator(data_dir, snarl_rate=2000.0, seconds_per_file=snarls / 2000.0 / 2, seed=5,
                       start_time=1.8e9)
    while sum(w.get(STREAM, 0) for w in sim.written.values()) < snarls:
        sim.step()
    sim.rotate()
    sim.close()
    return sum(w.get(STREAM, 0) for w in sim.written.values())


def read_all(port: int, codec: str | None, max_records: int = 20000) -> tuple[int, float]:
    """Every DaqSnarl record the server at ``port`` has: (records, seconds from subscribe to the last one)."""
    with DDSClient("127.0.0.1", port, compression=codec) as dds:
        dds.subscribe(Subscription(streams=[STREAM], keep_up="all", start="oldest"))
        t0 = time.perf_counter()
        n, last = 0, t0
        while True:
            try:
                n += len(dds.next_batch(max_records, timeout=1.0))
            except DDSTimeout:
                return n, last - t0
            last = time.perf_counter()


def wire(snarls: int, work: Path) -> list[str]:
    data = work / "wire"
    data.mkdir()
    records = make_daq_files(data, snarls)
    size = sum(f.stat().st_size for f in data.iterdir()) / 1e6
    lines = [f"DaqSnarl records: {records} (simulated DAQ files, {size:.1f} MB on disk)", "",
             "| link | compression | bytes on the wire | records/s | seconds | time saved |",
             "|---|---|---|---|---|---|"]
    with ServerProc(data) as server:
        read_all(server.port, None)  # warm: the files in the page cache, the first child's imports done
        for rate in (None, 100e6, 10e6):
            base = None
            for codec in CODECS:
                runs = []
                for _ in range(2):  # the best of two: the machine is shared
                    with Relay((server.host, server.port), rate) as relay:
                        n, seconds = read_all(relay.port, codec)
                        assert n == records, (n, records)
                        runs.append((seconds, relay.down_bytes))
                seconds, moved = min(runs)
                base = base or (moved, seconds)
                saved = f"{100 * (1 - seconds / base[1]):.0f} %" if codec else ""
                link = "loopback (relay, unlimited)" if rate is None else f"{rate / 1e6:g} MB/s"
                lines.append(f"| {link} | {codec or 'none'} | {moved / 1e6:.1f} MB ({moved / base[0]:.0%}) | "
                             f"{n / seconds:,.0f} | {seconds:.2f} | {saved} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.remote", description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("wire", "xrootd"), default=None)
    ap.add_argument("--snarls", type=int, default=40000, help="DaqSnarl records to serve [40000]")
    args = ap.parse_args(argv)
    out = [f"command: python -m bench.remote {' '.join(sys.argv[1:])}".rstrip(), ""]
    with tempfile.TemporaryDirectory(prefix="dds-bench-remote-") as tmp:
        work = Path(tmp)
        if args.only in (None, "wire"):
            out += ["## Compressed wire", "", *wire(args.snarls, work), ""]
        if args.only in (None, "xrootd"):
            from bench.remote_xrootd import xrootd_figures

            out += ["## Data through XRootD", "", *xrootd_figures(args.snarls, work), ""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
