"""The online monitor's page: end-to-end delay from a record written to the plot redrawn, and load size.

    python -m bench.monitor_page                        # 100 updates, screenshot to docs/ddsmonitor.png
    python -m bench.monitor_page --updates 300 --interval 0.1 --update-interval 0.05

Delay: a writer process appends one record every ``interval`` seconds to a live
ROOT file (``time.time()`` stamped just before each append, as in
``bench.latency``); a ddsparentserver serves it; ddsmonitor fills a histogram of
``seq`` and pushes the changed package over server-sent events; a headless
Chromium shows the page, which logs every redraw (``window.ddsMonitor.draws``:
entries and ``Date.now()``). Record k is on screen at the first redraw with at
least k + 1 entries; its delay is that time minus its stamp (one clock: same
machine).

Load size: the demo's config against a simulated DAQ; the browser's own
Resource Timing (``transferSize``: bytes over the wire, gzip where it applies,
and ``decodedBodySize``) for the page, its assets and the first packages. The
same page is saved as a PNG (the DAQ tab).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dispatcher.testing import ServerProc

from .common import percentile
from .latency import STREAM, _Writer

ROOT = Path(__file__).resolve().parent.parent
#: the issue's target for the median delay, with push
P50_TARGET = 1.0

LATENCY_CONFIG = """\
[monitor]
title = "delay measurement"
update_interval = {update_interval}

[[histogram]]
name = "seq"
stream = "{stream}"
x = "seq"
bins = 100
range = [0, {appends}]
"""


def measure_delay(updates: int, interval: float, update_interval: float) -> dict:
    """Delays (seconds) from append to redraw for ``updates`` appended records."""
    import uproot

    from clients.monitor.headless import Chromium
    from clients.monitor.testing import MonitorProc

    appends = updates + 1  # seq 0 is written before the measurement starts
    with tempfile.TemporaryDirectory(prefix="ddsmonitor-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        config = Path(tmp) / "monitor.toml"
        config.write_text(LATENCY_CONFIG.format(update_interval=update_interval, stream=STREAM, appends=appends))
        writer = _Writer(data, appends, interval, rotations=0)
        try:
            with ServerProc(data) as server, MonitorProc(config, server.host, server.port) as monitor, \
                    Chromium() as browser:
                browser.open(monitor.url)
                browser.wait_for("window.ddsMonitor && window.ddsMonitor.ready === true", timeout=20)
                browser.wait_for("Number(document.querySelector('[data-object=seq]').dataset.entries) >= 1", 20)
                writer.go.set()
                browser.wait_for(f"Number(document.querySelector('[data-object=seq]').dataset.entries) >= {appends}",
                                 timeout=appends * interval + 30, interval=0.5)
                draws = browser.evaluate("window.ddsMonitor.draws.filter(d => d.object === 'seq')"
                                         ".map(d => [d.entries, d.at])")
        finally:
            writer.stop()
        (name,) = [n for n in os.listdir(data) if n.endswith(".root")]
        with uproot.open(data / name) as f:
            stamps = f[STREAM]["stamp"].array(library="np")
    delays = []
    for k in range(1, appends):
        shown = min(at for entries, at in draws if entries >= k + 1) / 1000.0
        delays.append(shown - float(stamps[k]))
    return {"updates": len(delays), "p50": percentile(delays, 50), "p90": percentile(delays, 90),
            "max": max(delays), "redraws": len(draws)}


def measure_page(seconds: float, screenshot: Path | None) -> dict:
    """The demo page's load size (bytes) after ``seconds`` of a simulated DAQ; saves a screenshot."""
    from clients.monitor.headless import Chromium
    from clients.monitor.testing import MonitorProc

    with tempfile.TemporaryDirectory(prefix="ddsmonitor-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        daq = subprocess.Popen([sys.executable, "-m", "demo.daqsim", "-d", str(data), "--seconds", str(seconds + 60),
                                "--seconds-per-file", "10"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 20
            while not any(p.suffix == ".root" for p in data.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.05)
            with ServerProc(data) as server, \
                    MonitorProc(ROOT / "demo" / "monitor.toml", server.host, server.port) as monitor, \
                    Chromium(width=1400, height=900) as browser:
                browser.open(monitor.url)
                browser.wait_for("window.ddsMonitor && window.ddsMonitor.ready === true", timeout=20)
                time.sleep(seconds)
                sizes = browser.evaluate(
                    "(() => { const first = {}; const out = [];"
                    " for (const e of [...performance.getEntriesByType('navigation'),"
                    "                  ...performance.getEntriesByType('resource')]) {"
                    "   const path = new URL(e.name).pathname;"
                    "   if (path === '/api/events' || first[path]) continue; first[path] = true;"
                    "   out.push([path, e.transferSize, e.decodedBodySize]); } return out; })()")
                if screenshot is not None:
                    screenshot.write_bytes(browser.screenshot())
        finally:
            if daq.poll() is None:
                os.killpg(daq.pid, signal.SIGTERM)
            daq.wait(10)
    assets = [s for s in sizes if not s[0].startswith("/api/")]
    return {"files": sizes, "assets_transfer": sum(s[1] for s in assets), "assets_decoded": sum(s[2] for s in assets),
            "total_transfer": sum(s[1] for s in sizes), "total_decoded": sum(s[2] for s in sizes)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=100, help="records appended and timed (default 100)")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between appends (default 0.25)")
    parser.add_argument("--update-interval", type=float, default=0.2,
                        help="the monitor's update_interval, seconds (default 0.2, as the demo's config)")
    parser.add_argument("--page-seconds", type=float, default=12.0, help="seconds of DAQ before the look at the page")
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "ddsmonitor.png",
                        help="where the PNG of the demo page goes (default docs/ddsmonitor.png)")
    args = parser.parse_args(argv)

    page = measure_page(args.page_seconds, args.screenshot)
    print(f"page load (demo config, after {args.page_seconds:g} s of data), bytes over the wire / decoded:")
    for path, transfer, decoded in page["files"]:
        print(f"  {path:34s} {transfer:9d} {decoded:9d}")
    print(f"  {'assets (page, script, style, uPlot)':34s} {page['assets_transfer']:9d} {page['assets_decoded']:9d}")
    print(f"  {'everything on first load':34s} {page['total_transfer']:9d} {page['total_decoded']:9d}")
    print(f"screenshot: {args.screenshot}")

    delay = measure_delay(args.updates, args.interval, args.update_interval)
    verdict = "meets" if delay["p50"] < P50_TARGET else "MISSES"
    print(f"record written -> plot redrawn, {delay['updates']} updates (one record every {args.interval:g} s, "
          f"update_interval {args.update_interval:g} s, push by server-sent events):")
    print(f"  p50 {delay['p50'] * 1000:.0f} ms  p90 {delay['p90'] * 1000:.0f} ms  max {delay['max'] * 1000:.0f} ms  "
          f"({delay['redraws']} redraws; {verdict} the {P50_TARGET * 1000:.0f} ms p50 target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
