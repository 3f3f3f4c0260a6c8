"""Helpers for tests and benchmarks that need a real ``ddsparentserver`` process.

Like Twisted's ``twisted.internet.testing``, this module ships with the package
so that the test suite, the benchmarks and anyone testing code against DDS start
the server the same way. The server itself never imports it.

    from clients import DDSClient
    from dispatcher.testing import ServerProc

    with ServerProc("/data/daq") as server, DDSClient(server.host, server.port) as client:
        ...
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatcher.protocol import PROTOCOL_VERSION, Connection, Hello, NextBatch, Ok, Subscribe, Welcome
from dispatcher.transport import recv_message, send_message

__all__ = ["LISTENING", "ServerProc", "XRootDProc", "free_port", "server_command", "stalled_transfer",
           "unread_bytes", "wait_until"]

#: the line the parent logs once it accepts connections, with the real port
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")


def server_command() -> list[str]:
    """The command that starts ``ddsparentserver`` from this interpreter's environment.

    The console script when it is installed next to the interpreter, else the
    same entry point run through ``python -c`` (a source tree that was never
    installed).
    """
    exe = Path(sys.executable).parent / "ddsparentserver"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from dispatcher.cli import parentserver_main; parentserver_main()"]


class ServerProc:
    """A ``ddsparentserver`` on 127.0.0.1 with a free port; a context manager that always stops it.

    Args:
        data_dir (str | Path): the data directory it serves (``-d``).
        *args (str): further command-line options, e.g. ``"-m", "2"``.
        log_file (str | Path | None): where the server logs; default a new file next to ``data_dir``.
        level (str): the log level (``-l``); default ``"Warning"``, tests use ``"Debug"`` to read the log.

    Raises:
        RuntimeError: the server exited, or did not log its port within 30 s.
    """

    host: str
    port: int
    data_dir: str | None
    log_path: Path
    proc: subprocess.Popen

    def __init__(self, data_dir, *args: str, log_file=None, level: str = "Warning") -> None:
        self.data_dir = str(data_dir)
        self.log_path = Path(log_file or Path(data_dir).parent / f"server-{time.monotonic_ns()}.log")
        cmd = [*server_command(), "-p", "0", "-b", "127.0.0.1", "-d", self.data_dir, "-l", level,
               "--log-file", str(self.log_path), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.host = "127.0.0.1"
        try:
            self.port = self._wait_port()
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        """Everything the server has logged so far ("" before its first line)."""
        return self.log_path.read_text() if self.log_path.exists() else ""

    def _wait_port(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = LISTENING.search(self.log)
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else b""
                raise RuntimeError(f"ddsparentserver exited: {err.decode(errors='replace')}")
            time.sleep(0.02)
        raise RuntimeError("ddsparentserver did not start listening")

    def children(self) -> list[int]:
        """Process ids of the parent's children (one per connected client)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
            return [int(x) for x in text.split()]
        except OSError:
            out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.pid)], capture_output=True, text=True)
            return [int(x) for x in out.stdout.split()]

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a graceful stop), then SIGKILL after ``timeout`` seconds; returns the exit status.

        Args:
            timeout (float): seconds to wait for the graceful stop; default 10.
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class XRootDProc:
    """A real ``xrootd`` exporting a new directory on 127.0.0.1 with a free port; a context manager that stops it.

    xrootd refuses to run as root, so as root it is started with ``-R`` and an unprivileged
    user (``nobody``); xrootd 5.5 has no bind-address option, so its config allows only
    localhost to connect. The exported directory is world-readable (the server runs as
    that user); files written into it by the test are read through ``url``.

    Args:
        port (int or None): the port; default a free one (also for a restart on the same port).

    Attributes:
        export (Path): the exported directory; ``url`` its ``root://127.0.0.1:PORT//...`` URL.
    """

    def __init__(self, port: int | None = None, user: str = "nobody") -> None:
        exe = shutil.which("xrootd")
        if exe is None:
            raise RuntimeError("no xrootd server: install Debian's xrootd-server (make xrootd-server)")
        self.base = Path(tempfile.mkdtemp(prefix="dds-xrootd-"))
        self.export = self.base / "data"
        self.admin = self.base / "admin"
        self.export.mkdir()
        self.admin.mkdir()
        for d in (self.base, self.export):
            d.chmod(0o755)
        self.user = user
        if os.geteuid() == 0:
            shutil.chown(self.admin, user)
        self.port = port or free_port()
        self.config = self.base / "xrootd.cfg"
        self.config.write_text(
            f"xrd.port {self.port}\n"
            "xrd.allow host localhost\n"
            "xrd.allow host 127.0.0.1\n"
            f"all.export {self.export}\n"
            f"all.adminpath {self.admin}\n"
            f"all.pidpath {self.admin}\n"
        )
        self.log_path = self.admin / "xrootd.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"root://127.0.0.1:{self.port}/{self.export}"

    def start(self, timeout: float = 20.0) -> None:
        """Start (again, on the same port) and wait until it answers."""
        cmd = ["xrootd", "-c", str(self.config), "-l", str(self.log_path), "-n", f"dds{self.port}"]
        if os.geteuid() == 0:
            cmd += ["-R", self.user]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xrootd exited with {self.proc.returncode}: {self.log[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"xrootd did not start listening on port {self.port}: {self.log[-2000:]}")

    @property
    def log(self) -> str:
        logs = sorted(self.admin.rglob("xrootd.log*"))
        return "".join(p.read_text(errors="replace") for p in logs)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def close(self) -> None:
        """Stop and remove the exported directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> XRootDProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
               pause: float = 0.02) -> Any:
    """``predicate()``'s first true value, polled every ``pause`` s; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(pause)


def unread_bytes(sock: socket.socket) -> int:
    """How many bytes wait unread in ``sock``'s receive buffer."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def stalled_transfer(server: ServerProc, records: int, stream: str = "DaqSnarl") -> tuple[socket.socket, int]:
    """A client that asks for a batch of ``records`` and never reads it: its child stays blocked in a send.

    With ``records`` large enough (an answer of some MB, more than both socket
    buffers hold) the child cannot finish the send until the socket is closed.

    Returns:
        tuple[socket.socket, int]: the socket (the caller closes it) and the pid of its child.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.settimeout(10)
        sock.connect((server.host, server.port))
        conn = Connection("client")
        send_message(sock, conn, Hello(PROTOCOL_VERSION, "stalled"))
        welcome = recv_message(sock, conn, 10)
        assert isinstance(welcome, Welcome), welcome
        send_message(sock, conn, Subscribe({"streams": [stream], "keep_up": "all", "start": "oldest"}))
        reply = recv_message(sock, conn, 10)
        assert isinstance(reply, Ok), reply
        send_message(sock, conn, NextBatch(records, 10.0))
        # the answer has begun to arrive: the child is inside a send it cannot finish
        wait_until(lambda: unread_bytes(sock) > 0, what="the answer to start")
    except BaseException:
        sock.close()
        raise
    return sock, welcome.pid
