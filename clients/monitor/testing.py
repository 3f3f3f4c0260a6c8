"""A ``ddsmonitor`` process for tests, benchmarks and the demo; a context manager that always stops it.

    from clients.monitor.testing import MonitorProc

    with MonitorProc("demo/monitor.toml", "127.0.0.1", 9090) as monitor:
        print(monitor.url)          # http://127.0.0.1:PORT/ (a free port)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["SERVING", "MonitorProc", "monitor_command"]

#: the line ddsmonitor prints once the page is served, with the real URL
SERVING = re.compile(r"ddsmonitor: serving (http://\S+/)")


def monitor_command() -> list[str]:
    """The command that starts ``ddsmonitor`` from this interpreter's environment."""
    exe = Path(sys.executable).parent / "ddsmonitor"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from clients.monitor.cli import main; sys.argv[0] = 'ddsmonitor'; "
                                  "main()"]


class MonitorProc:
    """``ddsmonitor`` on 127.0.0.1 (a free HTTP port unless told), in its own process group.

    Args:
        config (str | Path): the monitor config.
        host (str), port (int): the ddsparentserver.
        token_file (str | Path | None): passed as ``--token-file``; default none (read-only).
        log_file (str | Path | None): where its output goes; default a temporary file.
        start_timeout (float): seconds to wait for the ``serving`` line; default 30.
        http_port (int): the page's port; default 0 (a free one).

    Raises:
        RuntimeError: it exited, or printed no URL in time (with its output).
    """

    def __init__(self, config, host: str, port: int, *, token_file=None, log_file=None,
                 start_timeout: float = 30.0, http_port: int = 0) -> None:
        self._kept: str | None = None
        if log_file is None:
            handle, name = tempfile.mkstemp(prefix="ddsmonitor-", suffix=".log")
            os.close(handle)
            self._own_log = True
            self.log_path = Path(name)
        else:
            self._own_log = False
            self.log_path = Path(log_file)
        cmd = [*monitor_command(), "--config", str(config), "-H", host, "-p", str(port), "--port", str(http_port),
               "--bind", "127.0.0.1"]
        if token_file is not None:
            cmd += ["--token-file", str(token_file)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        try:
            self.url = self._wait_url(start_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def output(self) -> str:
        """What it printed so far (kept after :meth:`stop` removed a temporary log)."""
        if self._kept is not None:
            return self._kept
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _wait_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = SERVING.search(self.output)
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"ddsmonitor exited with status {self.proc.returncode}:\n{self.output}")
            time.sleep(0.05)
        raise RuntimeError(f"ddsmonitor served no page within {timeout:g} s:\n{self.output}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL of its group after ``timeout`` seconds; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._own_log and self._kept is None:
            self._kept = self.output
            self.log_path.unlink(missing_ok=True)
        return self.proc.returncode

    def __enter__(self) -> MonitorProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
