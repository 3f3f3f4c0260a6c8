"""``ddsdemo`` (``make demo``): a simulated DAQ, a ddsparentserver and two live clients.

What it does, in order:

1. makes a temporary directory; the simulated DAQ (``ddsdaqsim``) writes rotating
   ROOT files into its ``data`` folder;
2. starts ``ddsparentserver`` on 127.0.0.1 (port 9090, or a free one if 9090 is
   taken) serving that folder, logging to ``server.log`` there;
3. runs two clients, each its own DDS session: a live monitor (keep-up ``all``:
   every record, rates, an ``nhits`` histogram) and an event display (keep-up
   ``record``: the newest snarl passing a server-side cut), and redraws their
   screens: in place on a terminal, one after another otherwise;
4. after ``DEMO_SECONDS`` (default 20) or Ctrl-C stops the DAQ, lets the monitor
   catch up, ends both sessions, stops the server with ``ddscomm -s`` (SIGTERM if
   that fails), and removes the temporary directory.

The server and the DAQ run in their own process groups, so a Ctrl-C reaches only
the demo, which then stops them in order.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .screen import Screen

DEFAULT_SECONDS = 20.0
DEFAULT_PORT = 9090
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

def _script(name: str, fallback_module: str, fallback_main: str) -> list[str]:
    """The console script ``name`` of this environment, or the same through this Python."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return [str(candidate)]
    return [sys.executable, "-c", f"import sys; from {fallback_module} import {fallback_main}; "
                                  f"sys.argv[0] = {name!r}; {fallback_main}()"]


def _own_group() -> dict:
    """Popen arguments that put a child in its own process group (Ctrl-C reaches only us)."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"preexec_fn": os.setpgrp}


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class Demo:
    """The demo's processes and clients; :meth:`close` ends every one of them."""

    def __init__(self, *, port: int = DEFAULT_PORT, snarl_rate: float = 200.0, seconds_per_file: float = 5.0,
                 out=None):
        self.out = out or sys.stdout
        self.tmp = tempfile.mkdtemp(prefix="ddsdemo-")
        self.data_dir = os.path.join(self.tmp, "data")
        os.mkdir(self.data_dir)
        self.server_log = os.path.join(self.tmp, "server.log")
        self.daq_log = os.path.join(self.tmp, "daqsim.log")
        self.wanted_port = port
        self.snarl_rate = snarl_rate
        self.seconds_per_file = seconds_per_file
        self.port = None
        self.server: subprocess.Popen | None = None
        self.daq: subprocess.Popen | None = None
        self.monitor = None
        self.display = None
        self.web = None  # ddsmonitor: the online monitor in the browser
        self.notes: list[str] = []

    def say(self, text: str) -> None:
        print(f"ddsdemo: {text}", file=self.out, flush=True)

    # ---- starting ----------------------------------------------------------------

    def start_daq(self, max_seconds: float) -> None:
        # --seconds bounds the DAQ even if this process is killed before it can stop it
        cmd = _script("ddsdaqsim", "demo.daqsim", "main") + [
            "-d", self.data_dir, "--snarl-rate", f"{self.snarl_rate:g}",
            "--seconds-per-file", f"{self.seconds_per_file:g}", "--seconds", f"{max_seconds:g}"]
        with open(self.daq_log, "ab") as log:
            self.daq = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, **_own_group())

    def start_server(self) -> None:
        port = self.wanted_port
        if port and not port_is_free(port):
            self.say(f"port {port} is in use; the server takes a free port instead")
            port = 0
        for attempt in (port, 0):
            self.server = self._server_process(attempt)
            found = self._wait_listening(self.server, timeout=30.0)
            if found:
                self.port = found
                return
            if self.server.poll() is None:
                break  # running but silent: give up below
            if attempt == 0:
                break
        raise RuntimeError(f"ddsparentserver did not start; its log:\n{self._tail(self.server_log, 10)}")

    def _server_process(self, port: int) -> subprocess.Popen:
        cmd = _script("ddsparentserver", "dispatcher.cli", "parentserver_main") + [
            "-p", str(port), "-b", "127.0.0.1", "-d", self.data_dir, "-l", "Info", "--log-file", self.server_log]
        with open(os.path.join(self.tmp, "server.err"), "ab") as err:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    **_own_group())

    def _wait_listening(self, proc: subprocess.Popen, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.findall(r"listening on [\d.]+:(\d+)", self._tail(self.server_log, 50))
            if m and proc.poll() is None:
                return int(m[-1])
            if proc.poll() is not None:
                return None
            time.sleep(0.05)
        return None

    def wait_first_file(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(n.endswith(".root") for n in os.listdir(self.data_dir)):
                return
            if self.daq.poll() is not None:
                raise RuntimeError(f"the simulated DAQ exited: {self._tail(self.daq_log, 5)}")
            time.sleep(0.05)
        raise RuntimeError(f"the simulated DAQ wrote no file within {timeout:g} s")

    def start_clients(self) -> None:
        from .display import EventDisplay
        from .monitor import LiveMonitor

        self.monitor = LiveMonitor("127.0.0.1", self.port).start()
        self.display = EventDisplay("127.0.0.1", self.port).start()

    def start_web_monitor(self) -> None:
        """``ddsmonitor`` with ``demo/monitor.toml`` (port 8080, or a free one); says its URL."""
        from clients.monitor.testing import MonitorProc

        for http_port in (8080, 0) if port_is_free(8080) else (0,):  # 8080 may be taken meanwhile
            try:
                self.web = MonitorProc(Path(__file__).with_name("monitor.toml"), "127.0.0.1", self.port,
                                       http_port=http_port, log_file=os.path.join(self.tmp, "ddsmonitor.log"))
                break
            except RuntimeError as exc:
                failure = exc
        else:
            self.say(f"the online monitor did not start: {failure}")
            return
        self.say(f"online monitor in the browser: {self.web.url}")

    # ---- showing -----------------------------------------------------------------

    def frame(self, elapsed: float, seconds: float) -> list[str]:
        daq = self._tail(self.daq_log, 1).strip()
        lines = [f"DDS demo  {elapsed:4.1f} / {seconds:g} s   server 127.0.0.1:{self.port}   "
                 f"data {self.data_dir}",
                 f"DAQ: {daq.removeprefix('ddsdaqsim: ') if daq else 'starting'}", ""]
        lines += self.monitor.render() + [""] + self.display.render()
        return lines

    # ---- stopping ----------------------------------------------------------------

    def drain(self, quiet: float = 1.0, timeout: float = 10.0) -> None:
        """After the DAQ stopped: wait until the monitor got nothing new for ``quiet`` seconds."""
        if self.monitor is None:
            return
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            now = dict(self.monitor.counts)
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.1)

    def stop_daq(self) -> None:
        if self.daq is None or self.daq.poll() is not None:
            return
        self.daq.send_signal(signal.SIGTERM)
        try:
            self.daq.wait(10)
        except subprocess.TimeoutExpired:
            self.daq.kill()
            self.daq.wait(5)

    def stop_clients(self) -> None:
        for client in (self.monitor, self.display):
            if client is not None:
                client.stop()

    def stop_server(self) -> str:
        proc = self.server
        if proc is None or proc.poll() is not None:
            return "not running"
        how = "ddscomm -s"
        if self.port:
            try:
                subprocess.run(_script("ddscomm", "dispatcher.cli", "ddscomm_main") + ["-s", "-p", str(self.port),
                               "-H", "127.0.0.1"], stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            how = "SIGTERM"
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                how = "SIGKILL"
                proc.kill()
                proc.wait(5)
        return f"{how}, exit status {proc.returncode}"

    def written(self) -> dict:
        """``{stream: entries}`` the DAQ wrote, read back from its files."""
        import uproot

        totals: dict = {}
        for name in sorted(os.listdir(self.data_dir)):
            if not name.endswith(".root"):
                continue
            with uproot.open(os.path.join(self.data_dir, name)) as f:
                for key, cls in f.classnames(recursive=False, cycle=False).items():
                    if cls == "TTree":
                        totals[key] = totals.get(key, 0) + f[key].num_entries
        return totals

    def close(self) -> list[str]:
        """Stop everything this demo started, in order, and remove the temporary directory."""
        report = []
        try:
            self.stop_daq()
            self.drain()
            self.stop_clients()
            if self.web is not None:
                report.append(f"ddsmonitor stopped (exit status {self.web.stop()})")
            if self.monitor is not None:
                try:
                    written = self.written()
                except Exception as exc:  # a half-written last file must not stop the clean-up
                    written = {}
                    report.append(f"could not read the DAQ files back: {exc}")
                for stream, n in self.monitor.counts.items():
                    if stream in written:
                        report.append(f"{stream}: the monitor received {n} of the {written[stream]} records "
                                      f"the DAQ wrote")
            report.append(f"ddsparentserver stopped ({self.stop_server()})")
        finally:
            for proc in (self.server, self.daq):  # whatever happened above, nothing survives us
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
            shutil.rmtree(self.tmp, ignore_errors=True)
        report.append(f"removed {self.tmp}")
        return report

    @staticmethod
    def _tail(path: str, n: int) -> str:
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class _Stop:
    """Set by SIGINT, SIGTERM or SIGHUP; the handler only records (the main loop acts)."""

    def __init__(self):
        self.event = threading.Event()
        self.signum = None

    def __call__(self, signum, _frame):
        self.signum = signum
        self.event.set()


def run_demo(seconds: float, *, port: int = DEFAULT_PORT, refresh: float | None = None,
             snarl_rate: float = 200.0, out=None) -> int:
    out = out or sys.stdout
    screen = Screen(out)
    refresh = refresh or (1.0 if screen.tty else 2.0)
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    demo = Demo(port=port, snarl_rate=snarl_rate, out=out)
    status = EXIT_OK
    try:
        demo.say(f"temporary directory {demo.tmp}")
        demo.start_daq(max_seconds=seconds + 60)
        demo.start_server()
        demo.say(f"simulated DAQ (pid {demo.daq.pid}) writes {demo.data_dir}; ddsparentserver "
                 f"(pid {demo.server.pid}) on 127.0.0.1:{demo.port}")
        demo.say(f"running {seconds:g} s (Ctrl-C stops); meanwhile, in another shell: "
                 f".venv/bin/ddsjob -p {demo.port} -m EventDump")
        demo.wait_first_file()
        writer = re.search(r"ddsdaqsim: writer: (.*)", demo._tail(demo.daq_log, 50))
        demo.say(f"the simulated DAQ writes with {writer.group(1) if writer else 'an unknown writer'}")
        demo.start_clients()
        demo.start_web_monitor()
        began = time.monotonic()
        deadline = began + seconds
        next_frame = began + min(refresh, seconds)
        while not stop.event.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            stop.event.wait(max(0.0, min(next_frame, deadline) - now))
            if time.monotonic() >= next_frame and next_frame < deadline and not stop.event.is_set():
                screen.show(demo.frame(time.monotonic() - began, seconds), title=f"{time.monotonic() - began:.1f} s")
                next_frame += refresh
        if stop.signum is not None:
            status = EXIT_INTERRUPTED
            demo.say(f"{signal.Signals(stop.signum).name} received: stopping")
        final = demo.frame(min(time.monotonic() - began, seconds), seconds)
        screen.show(final, final=True, title="last screen")
    except Exception as exc:
        demo.say(f"failed: {exc}")
        status = EXIT_FAILED
    finally:
        try:
            for line in demo.close():
                demo.say(line)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return status


def _seconds_from_env() -> float:
    text = os.environ.get("DEMO_SECONDS", "").strip()
    if not text:
        return DEFAULT_SECONDS
    try:
        value = float(text)
    except ValueError:
        raise SystemExit(f"ddsdemo: DEMO_SECONDS must be a number of seconds, not {text!r}") from None
    if not value > 0:
        raise SystemExit(f"ddsdemo: DEMO_SECONDS must be positive, not {text!r}")
    return value


def _build_cli():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--seconds", type=click.FloatRange(min=0.1), default=None,
                  help=f"how long to run  [default: $DEMO_SECONDS, else {DEFAULT_SECONDS:g}]")
    @click.option("-p", "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
                  help="server port; a free one if taken, 0 for any")
    @click.option("--refresh", type=click.FloatRange(min=0.1), default=None,
                  help="seconds between screens  [default: 1 on a terminal, 2 otherwise]")
    @click.option("--snarl-rate", type=click.FloatRange(min=1), default=200.0, show_default=True,
                  help="simulated DaqSnarl rate, Hz")
    def main(seconds, port, refresh, snarl_rate):
        """A simulated DAQ, a ddsparentserver and two live clients (a monitor and an event display)."""
        sys.exit(run_demo(seconds if seconds is not None else _seconds_from_env(), port=port, refresh=refresh,
                          snarl_rate=snarl_rate))

    return main


def main(argv=None):
    """Console script ``ddsdemo``."""
    return _build_cli().main(args=argv, prog_name="ddsdemo")


if __name__ == "__main__":
    main()
