"""An event display: always the newest snarl that passes a cut, drawn as a hit map.

An event display does not want every record, only the newest: it subscribes
with keep-up ``record``, so each ``next`` returns the newest passing snarl not
yet shown and the server skips the older ones. The cut (``nhits >= 50`` by
default) runs on the server, so only displayable snarls cross the network.

The map shows the detector side view: planes left to right, strips bottom to
top, each character the summed pulse height of the hits in that cell.

``python -m demo.display -H HOST -p PORT`` runs it alone; ``ddsdemo`` runs it
next to the live monitor.
"""

from __future__ import annotations

import math
import time

import numpy as np

from clients import Subscription

from .screen import BackgroundClient

N_PLANES = 486
N_STRIPS = 192
SHADES = " .:-=+*#%@"
TRIGGERS = {1: "plane", 2: "energy", 4: "spill", 8: "light-injection", 16: "null"}


def hit_map(plane, strip, adc, *, columns: int = 61, rows: int = 6) -> list[str]:
    """The hits as ``rows`` lines of ``columns`` characters (planes across, strips up)."""
    grid = np.zeros((rows, columns))
    if len(plane):
        col = np.minimum(np.asarray(plane, dtype=np.int64) * columns // N_PLANES, columns - 1)
        row = np.minimum(np.asarray(strip, dtype=np.int64) * rows // N_STRIPS, rows - 1)
        np.add.at(grid, (row, col), np.asarray(adc, dtype=np.float64))
    top = grid.max()
    # a log scale: a single noise hit shows, a track core does not swamp it
    level = np.where(grid > 0, 1 + np.log1p(grid) / np.log1p(top) * (len(SHADES) - 2), 0) if top > 0 else grid
    return ["".join(SHADES[int(min(v, len(SHADES) - 1))] for v in line) for line in level[::-1]]


class EventDisplay(BackgroundClient):
    """Keeps the newest snarl passing ``cut`` (keep-up ``record``).

    Args:
        host (str), port (int): the ddsparentserver.
        cut (str): selection run on the server; default ``"nhits >= 50"``.
        interval (float): seconds between requests (a display needs no more); default 0.5.
    """

    name = "dds-display"

    def __init__(self, host: str, port: int, *, cut: str = "nhits >= 50", interval: float = 0.5):
        super().__init__(host, port, Subscription(streams=("DaqSnarl",), keep_up="record", selection=cut))
        self.cut, self.interval = cut, interval
        self.snarl: dict | None = None
        self.file = ""
        self.shown = 0

    def receive(self, dds) -> None:
        rs = dds.next(timeout=0.25)
        with self._lock:
            self.snarl, self.file = rs["DaqSnarl"], rs.file
            self.shown += 1
        self._stop.wait(self.interval)

    def render(self) -> list[str]:
        with self._lock:
            snarl, file, shown = self.snarl, self.file, self.shown
        head = f"EVENT DISPLAY  keep-up record: the newest snarl with {self.cut}  ({shown} shown)"
        if snarl is None:
            return [head, f"  waiting for a snarl{': ' + self.error if self.error else ''}"]
        age = max(0.0, time.time() - snarl.get("time", math.nan))
        trig = TRIGGERS.get(snarl.get("trigsrc"), str(snarl.get("trigsrc")))
        lines = [head,
                 f"  snarl {snarl.get('snarl')}  run {snarl.get('run')}/{snarl.get('subrun')}  trigger {trig}  "
                 f"nhits {snarl.get('nhits')}  {age:.2f} s old  ({file})"]
        rows = hit_map(snarl.get("plane", []), snarl.get("strip", []), snarl.get("adc", []))
        lines.append(f"  strip +{'-' * len(rows[0])}+")
        lines += [f"        |{row}|" for row in rows]
        lines.append(f"        +{'-' * len(rows[0])}+ plane 0..{N_PLANES - 1}")
        if self.error:
            lines.append(f"  session ended: {self.error}")
        return lines


def _build_cli():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("-H", "--host", default="localhost", show_default=True)
    @click.option("-p", "--port", type=click.IntRange(1, 65535), default=9090, show_default=True)
    @click.option("--cut", default="nhits >= 50", show_default=True, help="selection run on the server")
    @click.option("--seconds", type=click.FloatRange(min=0), default=None, help="stop after this long")
    @click.option("--refresh", type=click.FloatRange(min=0.1), default=1.0, show_default=True)
    def main(host, port, cut, seconds, refresh):
        """An event display of the newest snarl a ddsparentserver serves (Ctrl-C stops)."""
        from .screen import show_until

        show_until(EventDisplay(host, port, cut=cut, interval=refresh / 2).start(), seconds, refresh)

    return main


def main(argv=None):
    return _build_cli().main(args=argv, prog_name="python -m demo.display")


if __name__ == "__main__":
    main()
