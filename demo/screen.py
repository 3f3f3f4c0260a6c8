"""Terminal output of the demo clients, and the background session each of them runs.

``Screen`` redraws plain text (in place on a terminal, frame after frame in a pipe);
``BackgroundClient`` runs one DDS session in a thread until stopped; ``show_until``
redraws a client's ``render()`` until time is up, its session ends or Ctrl-C.
"""

from __future__ import annotations

import math
import sys
import threading
import time

from clients import DDSClient, DDSError, DDSTimeout

CLEAR = "\x1b[H\x1b[J"  # cursor home, clear to the end of the screen


class Screen:
    """Plain-text redraws: in place on a terminal, frame after frame in a pipe or log."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.frames = 0

    def show(self, lines: list[str], *, final: bool = False, title: str = "") -> None:
        text = "\n".join(lines) + "\n"
        if self.tty:
            self.out.write(CLEAR + text)
        else:
            rule = f"---- {title} " if title else "---- "
            self.out.write(rule + "-" * max(4, 78 - len(rule)) + "\n" + text)
        self.out.flush()
        self.frames += 1


class BackgroundClient:
    """One DDS session in a daemon thread: ``subscribe(self.subscription)``, then ``receive(dds)``
    every quarter second until :meth:`stop` (a timeout just loops); a DDSError ends it in ``error``."""

    name = "dds-client"

    def __init__(self, host: str, port: int, subscription):
        self.host, self.port, self.subscription = host, port, subscription
        self.error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self):
        """Receive in a background thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Receive until stopped (or the server ends the session)."""
        try:
            with DDSClient(self.host, self.port) as dds:
                dds.subscribe(self.subscription)
                while not self._stop.is_set():
                    try:
                        self.receive(dds)
                    except DDSTimeout:
                        continue
        except DDSError as exc:
            self.error = str(exc)

    def receive(self, dds: DDSClient) -> None:
        raise NotImplementedError


def show_until(widget, seconds, refresh: float) -> None:
    """Redraw ``widget.render()`` every ``refresh`` seconds until ``seconds`` pass, its session ends or Ctrl-C."""
    screen = Screen()
    deadline = math.inf if seconds is None else time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and widget._thread.is_alive():
            time.sleep(min(refresh, max(0.0, deadline - time.monotonic())))
            screen.show(widget.render())
    except KeyboardInterrupt:
        pass
    finally:
        widget.stop()
    screen.show(widget.render(), final=True)


