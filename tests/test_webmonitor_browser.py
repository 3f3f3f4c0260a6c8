"""The monitor's page in a real headless Chromium, against a live daqsim, ddsparentserver and ddsmonitor."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
import zlib

import hist
import httpx
import numpy as np
from uhi.io.json import default

from clients.monitor.headless import Chromium
from clients.monitor.testing import MonitorProc
from conftest import BIN, ROOT

TOKEN = "browser-test-token-0123"
ENTRIES = "Number(document.querySelector('[data-object=\"{name}\"]')?.dataset.entries || -1)"


def png_pixels(png: bytes) -> np.ndarray:
    """The RGB(A) pixels of an 8-bit, non-interlaced PNG (what Chromium writes), rows unfiltered."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], None
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(chunks)), np.uint8).reshape(height, 1 + width * channels)
    out = np.zeros((height, width * channels), np.int32)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        up = out[y - 1] if y else np.zeros_like(line)
        if kind == 0:
            out[y] = line
        elif kind == 2:
            out[y] = (line + up) & 255
        else:  # sub, average, paeth depend on the pixel to the left: one pass along the row
            row = out[y]
            for x in range(len(line)):
                left = row[x - channels] if x >= channels else 0
                corner = up[x - channels] if x >= channels else 0
                if kind == 1:
                    predictor = left
                elif kind == 3:
                    predictor = (left + up[x]) // 2
                else:
                    p = left + up[x] - corner
                    pa, pb, pc = abs(p - left), abs(p - up[x]), abs(p - corner)
                    predictor = left if pa <= pb and pa <= pc else (up[x] if pb <= pc else corner)
                row[x] = (line[x] + predictor) & 255
    return out.reshape(height, width, channels)[:, :, :3]


def start_daqsim(data_dir) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "ddsdaqsim"), "-d", str(data_dir), "--seconds", "90", "--seconds-per-file",
                             "5", "--snarl-rate", "200", "--dcs-rate", "1"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def wait_for_file(data_dir, daq: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.suffix == ".root" for p in data_dir.iterdir()):
            return
        assert daq.poll() is None, "ddsdaqsim exited"
        time.sleep(0.05)
    raise AssertionError(f"ddsdaqsim wrote no file within {timeout:g} s")


def test_the_page_updates_live_shows_published_packages_and_refuses_posts_without_token(data_dir, server_factory,
                                                                                      tmp_path):
    began = time.monotonic()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    daq = start_daqsim(data_dir)
    monitor = browser = None
    try:
        wait_for_file(data_dir, daq)
        server = server_factory(data_dir)
        monitor = MonitorProc(ROOT / "demo" / "monitor.toml", server.host, server.port, token_file=token_file)
        browser = Chromium(width=1400, height=900)
        browser.open(monitor.url)
        browser.wait_for("window.ddsMonitor && window.ddsMonitor.ready === true", timeout=20)
        browser.evaluate("window.firstLook = 'still the same page'")

        # first look, then a later one: the entry count rose, pushed into the same page (no reload)
        histogram = ENTRIES.format(name="nhits_plane_trigger")
        first = browser.wait_for(f"{histogram} > 0 && {histogram}", timeout=20)
        second = browser.wait_for(f"{histogram} > {first} && {histogram}", timeout=20)
        assert second > first > 0
        assert browser.evaluate("window.firstLook") == "still the same page"
        assert browser.evaluate("performance.getEntriesByType('navigation').length") == 1
        assert browser.evaluate("document.querySelector('[data-object=\"nhits\"] canvas') !== null")
        assert browser.evaluate("document.querySelector('#link').textContent") == "live"
        fresh = browser.evaluate("document.querySelector('[data-object=\"nhits_plane_trigger\"] .fresh').className")
        assert fresh == "fresh ok"

        # a package published by another producer shows up on the page; without the token it is refused
        occupancy = hist.Hist.new.Reg(4, 0, 4, name="crate").Double()
        occupancy.fill([0, 1, 1, 3, 3, 3])
        package = {"name": "shifter", "objects": {"occupancy": json.loads(json.dumps(occupancy, default=default))}}
        api = monitor.url + "api/packages"
        refused = httpx.post(api, json=package, timeout=10)
        assert refused.status_code == 401
        accepted = httpx.post(api, json=package, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert accepted.status_code == 200, accepted.text
        assert browser.wait_for(f"{ENTRIES.format(name='occupancy')} === 6", timeout=10)
        assert browser.evaluate("[...document.querySelectorAll('nav button')].map(b => b.textContent)") == [
            "DAQ", "Rates", "DCS", "Status", "Published"]

        # a screenshot of the DAQ tab that is not blank: plots in several colours over much of the page
        pixels = png_pixels(browser.screenshot())
        assert pixels.shape[:2] == (900, 1400)
        colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
        background = np.all(pixels == pixels[-1, -1], axis=2).mean()
        assert len(colours) > 50 and background < 0.9, (len(colours), background)
    finally:
        if browser is not None:
            browser.close()
        if monitor is not None:
            assert monitor.stop() == 0, monitor.output
        if daq.poll() is None:
            os.killpg(daq.pid, signal.SIGTERM)
        daq.wait(10)
    assert time.monotonic() - began < 60
