"""A headless Chromium driven over the DevTools protocol: look at the monitor's page from a test.

Used by the browser test and the latency measurement; needs the ``websockets``
package (test extra) and a Chromium (Debian's ``chromium``, ``make browser``).
Nothing is downloaded. The browser runs in its own process group, with its own
temporary profile, and :meth:`Chromium.close` ends the group and removes the
profile::

    with Chromium() as browser:
        browser.open("http://127.0.0.1:8080/")
        browser.wait_for("window.ddsMonitor && window.ddsMonitor.ready", timeout=10)
        png = browser.screenshot()
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "Chromium", "ChromiumError"]

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars")


class ChromiumError(RuntimeError):
    """The browser could not be started or did not answer as expected."""


class Chromium:
    """One headless Chromium with one page.

    Args:
        executable (str): the browser; default :data:`CHROMIUM`.
        width (int), height (int): the window size in pixels; default 1400 x 1000.
        start_timeout (float): seconds for the browser to open its DevTools port; default 30.

    Raises:
        ChromiumError: the executable is missing, or the browser did not start.
    """

    def __init__(self, executable: str = CHROMIUM, *, width: int = 1400, height: int = 1000,
                 start_timeout: float = 30.0):
        from websockets.sync.client import connect

        if not Path(executable).exists():
            raise ChromiumError(f"no browser at {executable}: install Debian's chromium (make browser)")
        self.profile = tempfile.mkdtemp(prefix="ddsmonitor-chromium-")
        self._ids = itertools.count(1)
        self._stack = contextlib.ExitStack()
        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port = self._devtools_port(start_timeout)
            page = self._page_socket(port, start_timeout)
            self.ws = self._stack.enter_context(connect(page, max_size=None, open_timeout=start_timeout))
            # the page gets exactly this size (the window's own frame would take some of it)
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, timeout: float) -> int:
        marker = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ChromiumError(f"the browser exited at start with status {self.proc.returncode}")
            try:
                first = marker.read_text().split("\n", 1)[0].strip()
                if first:
                    return int(first)
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise ChromiumError(f"the browser opened no DevTools port within {timeout:g} s")

    @staticmethod
    def _page_socket(port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as reply:
                targets = json.load(reply)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise ChromiumError(f"the browser showed no page within {timeout:g} s")

    # ---- the protocol -------------------------------------------------------------

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict:
        """Send one DevTools command and return its result (events in between are dropped).

        Args:
            method (str): e.g. ``"Page.navigate"``.
            timeout (float): seconds for the answer; default 30.
            **params: the command's parameters.

        Raises:
            ChromiumError: the browser answered with an error, or not in time.
        """
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChromiumError(f"no answer to {method} within {timeout:g} s")
            try:
                message = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                continue
            if message.get("id") == ident:
                if "error" in message:
                    raise ChromiumError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str) -> None:
        """Load ``url`` in the page."""
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """The value of a JavaScript expression in the page (promises awaited).

        Raises:
            ChromiumError: the expression threw.
        """
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise ChromiumError(f"{expression!r} threw: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float, interval: float = 0.05) -> Any:
        """Evaluate ``expression`` until it is truthy; return that value.

        Raises:
            ChromiumError: still falsy after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise ChromiumError(f"{expression!r} still {value!r} after {timeout:g} s")
            time.sleep(interval)

    def screenshot(self) -> bytes:
        """The page as PNG bytes."""
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    # ---- the end ------------------------------------------------------------------

    def close(self) -> None:
        """End the browser's process group and remove its profile."""
        self._stack.close()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:  # helpers (renderer, zygote) that outlive the main process
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
