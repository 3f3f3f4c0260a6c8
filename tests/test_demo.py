"""ddsdemo runs a DAQ, a server and live clients, ends by itself or on Ctrl-C, and leaves nothing."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import threading
import time

import numpy as np

from conftest import BIN
from demo.display import hit_map
from demo.run import Demo, Screen


def session_processes(sid: int) -> list[str]:
    """``pid args`` of every process still in session ``sid``."""
    out = subprocess.run(["ps", "-eo", "sid=,pid=,args="], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0] == str(sid):
            found.append(" ".join(parts[1:]))
    return found


def processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if text in line and "ps -eo" not in line]


class DemoProcess:
    """``ddsdemo`` in its own session, its output collected by a thread."""

    def __init__(self, *args, seconds: float):
        env = {**os.environ, "DEMO_SECONDS": f"{seconds:g}"}
        # -p 0: never take 9090 from someone else's server on this machine
        self.proc = subprocess.Popen([str(BIN / "ddsdemo"), "-p", "0", *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if text in self.output:
                return True
            time.sleep(0.05)
        return text in self.output

    def finish(self, timeout: float) -> int:
        """Wait for the demo; note what it left in its session (``self.left``), then end that."""
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:  # the test failed: end what the demo left running
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            self.left = session_processes(self.proc.pid)
            for pid_args in self.left:
                os.kill(int(pid_args.split()[0]), signal.SIGKILL)
            self.reader.join(10)

    def temp_dir(self) -> str:
        m = re.search(r"ddsdemo: temporary directory (\S+)", self.output)
        assert m, self.output
        return m.group(1)


def test_ddsdemo_runs_for_demo_seconds_shows_live_records_and_leaves_nothing_behind():
    demo = DemoProcess(seconds=4)
    began = time.monotonic()
    rc = demo.finish(timeout=90)
    out = demo.output
    assert rc == 0, out
    assert time.monotonic() - began < 90
    # live records: the monitor counted snarls, the event display showed one
    rows = re.findall(r"^\s+DaqSnarl\s+(\d+)\s+([\d.]+)\s+F\d{8}_\d{4}\.mdaq\.root$", out, re.M)
    assert rows and int(rows[-1][0]) > 50 and float(rows[-1][1]) > 0, out
    assert re.search(r"nhits of every DaqSnarl: \d+ entries", out)
    assert re.search(r"^  snarl \d+  run 12345/0  trigger \S+  nhits \d+", out, re.M), out
    # keep-up all never skips: the monitor got every record the DAQ wrote
    got = re.search(r"DaqSnarl: the monitor received (\d+) of the (\d+) records", out)
    assert got and got.group(1) == got.group(2) and int(got.group(2)) > 0, out
    assert "ddsparentserver stopped (ddscomm -s, exit status 0)" in out
    # nothing left: no process of the demo's session, none naming its directory, no directory
    tmp = demo.temp_dir()
    assert not os.path.exists(tmp)
    assert demo.left == []
    assert processes_mentioning(tmp) == []


def test_ctrl_c_stops_the_demo_cleanly():
    demo = DemoProcess(seconds=120)
    try:
        assert demo.wait_for("LIVE MONITOR", timeout=60), demo.output
        tmp = demo.temp_dir()
        os.kill(demo.proc.pid, signal.SIGINT)
    finally:
        rc = demo.finish(timeout=60)
    out = demo.output
    assert rc == 130, out
    assert "SIGINT received: stopping" in out
    assert "ddsparentserver stopped (ddscomm -s, exit status 0)" in out
    assert not os.path.exists(tmp)
    assert demo.left == []


def test_a_taken_port_makes_the_server_take_a_free_one():
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = io.StringIO()
        demo = Demo(port=port, out=out)
        try:
            demo.start_daq(max_seconds=30)
            demo.start_server()
            assert demo.port not in (None, port)
            assert f"port {port} is in use" in out.getvalue()
            with socket.create_connection(("127.0.0.1", demo.port), timeout=5):
                pass
        finally:
            report = demo.close()
    assert demo.server.returncode == 0 and demo.daq.returncode is not None
    assert not os.path.exists(demo.tmp) and report[-1] == f"removed {demo.tmp}"


def test_hit_map_puts_planes_across_and_strips_up():
    rows = hit_map([0, 485, 485], [0, 191, 191], [100.0, 50.0, 50.0], columns=10, rows=4)
    assert len(rows) == 4 and all(len(r) == 10 for r in rows)
    assert rows[-1][0] != " " and rows[0][-1] != " "  # bottom-left and top-right
    assert sum(ch != " " for r in rows for ch in r) == 2
    assert hit_map(np.array([], dtype=np.int16), [], [], columns=5, rows=2) == ["     ", "     "]


def test_screen_redraws_in_place_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for screen in (Screen(tty), Screen(pipe)):
        screen.show(["a"], title="1.0 s")
        screen.show(["b"])
    assert tty.getvalue() == "\x1b[H\x1b[Ja\n\x1b[H\x1b[Jb\n"
    assert "\x1b" not in pipe.getvalue() and pipe.getvalue().startswith("---- 1.0 s ---")
    assert pipe.getvalue().splitlines()[1::2] == ["a", "b"]
