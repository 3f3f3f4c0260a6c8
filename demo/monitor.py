"""An online monitor: every record of every stream, rates, and a live ``nhits`` histogram.

This is the kind of client DDS serves at the detector: it subscribes with
keep-up ``all`` (every record, never skipping), takes records in batches, and
redraws a plain-text screen: records per second per stream, how far behind the
DAQ it is (as the server says: each batch's ``.age`` and ``.lag``), the latest
DAQ and DCS monitor values, and a histogram of ``nhits`` of every snarl.

``python -m demo.monitor -H HOST -p PORT`` runs it alone against any server;
``ddsdemo`` runs it next to the event display.
"""

from __future__ import annotations

import collections
import math
import time

import awkward as ak
import numpy as np

from clients import Subscription
from clients.texthist import text_histogram

from .screen import BackgroundClient

STREAMS = ("DaqSnarl", "DaqMonitor", "DcsMonitor")
RATE_WINDOW = 3.0  # seconds the records/s are averaged over


class LiveMonitor(BackgroundClient):
    """Receives every record of ``streams`` and keeps what the screen shows.

    Args:
        host (str), port (int): the ddsparentserver.
        streams (tuple): streams to monitor; default DaqSnarl, DaqMonitor, DcsMonitor.
        start (str): where to start; default ``"oldest"``.
        bins (int), low (float), high (float): the ``nhits`` histogram; default 12 bins in [0, 600).
    """

    name = "dds-monitor"

    def __init__(self, host: str, port: int, *, streams=STREAMS, start: str = "oldest", bins: int = 12,
                 low: float = 0.0, high: float = 600.0):
        import hist

        super().__init__(host, port, Subscription(streams=streams, keep_up="all", start=start))
        self.hist = hist.Hist(hist.axis.Regular(bins, low, high, name="nhits", label="nhits of every DaqSnarl"))
        self.counts = dict.fromkeys(streams, 0)
        self.files: dict = {}  # stream -> newest file
        self.latest: dict = {}  # stream -> {branch: value} of its newest record
        self.age: dict = {}  # stream -> seconds its newest record had been written when the server sent it
        self.lag: dict = {}  # stream -> records written after its newest one, as the server knew
        self._arrivals: collections.deque[tuple[float, str, int]] = collections.deque()  # (monotonic time, stream, n)
        self._nhits_sum = 0.0
        self._nhits_sum2 = 0.0
        self.started = time.monotonic()

    # ---- receiving ---------------------------------------------------------------

    def receive(self, dds) -> None:
        batch = dds.next_batch(5000, timeout=0.25)
        self.add(batch.stream, batch.file, batch.arrays)
        with self._lock:
            if batch.age is not None:
                self.age[batch.stream] = batch.age
            self.lag.update(batch.lag)

    def add(self, stream: str, file: str, arrays: ak.Array) -> None:
        n = len(arrays)
        if not n:
            return
        last = arrays[-1].to_list()
        latest = {k: v for k, v in last.items() if not isinstance(v, list)}
        nhits = None
        if stream == "DaqSnarl" and "nhits" in arrays.fields:
            nhits = ak.to_numpy(arrays.nhits).astype(np.float64)
        with self._lock:
            self.counts[stream] = self.counts.get(stream, 0) + n
            self.files[stream] = file
            self.latest[stream] = latest
            self._arrivals.append((time.monotonic(), stream, n))
            if nhits is not None:
                self.hist.fill(nhits)
                self._nhits_sum += float(nhits.sum())
                self._nhits_sum2 += float((nhits * nhits).sum())

    # ---- showing -----------------------------------------------------------------

    def rates(self) -> dict:
        """Records per second per stream over the last few seconds."""
        now = time.monotonic()
        with self._lock:
            while self._arrivals and self._arrivals[0][0] < now - RATE_WINDOW:
                self._arrivals.popleft()
            window = min(RATE_WINDOW, max(now - self.started, 1e-3))
            out = dict.fromkeys(self.counts, 0.0)
            for _, stream, n in self._arrivals:
                out[stream] = out.get(stream, 0.0) + n / window
        return out

    def render(self, width: int = 40) -> list[str]:
        rates = self.rates()
        with self._lock:
            counts = dict(self.counts)
            files = dict(self.files)
            latest = {k: dict(v) for k, v in self.latest.items()}
            age, lag = dict(self.age), dict(self.lag)
            h = self.hist.copy()
            n_snarls = counts.get("DaqSnarl", 0)
            mean = self._nhits_sum / n_snarls if n_snarls else math.nan
            std = math.sqrt(max(0.0, self._nhits_sum2 / n_snarls - mean * mean)) if n_snarls else math.nan
        lines = [f"LIVE MONITOR  keep-up all: every record  ({self.host}:{self.port})",
                 f"  {'stream':<11} {'records':>8} {'per second':>11}  newest file"]
        for stream, n in counts.items():
            lines.append(f"  {stream:<11} {n:>8} {rates.get(stream, 0.0):>11.1f}  {files.get(stream, '-')}")
        snarl = latest.get("DaqSnarl")
        daq = latest.get("DaqMonitor")
        dcs = latest.get("DcsMonitor")
        status = []
        if snarl and "DaqSnarl" in age:
            status.append(f"newest snarl {snarl.get('snarl', '?')}, {age['DaqSnarl']:.2f} s behind the DAQ "
                          f"({lag.get('DaqSnarl', 0)} records)")
        if daq and "trigger_rate" in daq:
            status.append(f"DAQ trigger rate {daq['trigger_rate']:.0f} Hz")
        if dcs and "hv" in dcs:
            status.append(f"DCS HV {dcs['hv']:.1f} V, rack {dcs.get('temp_rack', math.nan):.1f} C")
        if status:
            lines.append("  " + "; ".join(status))
        if self.error:
            lines.append(f"  session ended: {self.error}")
        lines.append("")
        lines += ["  " + line for line in text_histogram(h, width=width, stats=(n_snarls, mean, std)).splitlines()]
        return lines


def _build_cli():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("-H", "--host", default="localhost", show_default=True)
    @click.option("-p", "--port", type=click.IntRange(1, 65535), default=9090, show_default=True)
    @click.option("--seconds", type=click.FloatRange(min=0), default=None, help="stop after this long")
    @click.option("--refresh", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
                  help="seconds between screens")
    @click.option("--start", default="current", show_default=True, help="current, oldest, latest or a file")
    def main(host, port, seconds, refresh, start):
        """A live monitor of every record a ddsparentserver serves (Ctrl-C stops)."""
        from .screen import show_until

        show_until(LiveMonitor(host, port, start=start).start(), seconds, refresh)

    return main


def main(argv=None):
    return _build_cli().main(args=argv, prog_name="python -m demo.monitor")


if __name__ == "__main__":
    main()
