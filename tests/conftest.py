"""Shared fixtures: real ddsparentserver processes on loopback and real ROOT files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import uproot

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def write_file(path, streams: dict, *, steps: int = 1) -> None:
    """Write a ROOT file with ``{stream: {branch: array}}``, appended in ``steps`` extends."""
    with uproot.recreate(str(path)) as f:
        for stream, branches in streams.items():
            types = {k: (v.type if hasattr(v, "layout") else np.asarray(v).dtype) for k, v in branches.items()}
            tree = f.mktree(stream, {k: (str(t.content) if hasattr(t, "content") else t) for k, t in types.items()})
            n = len(next(iter(branches.values())))
            edges = np.linspace(0, n, steps + 1).astype(int)
            for a, b in zip(edges[:-1], edges[1:]):
                if b > a:
                    tree.extend({k: v[a:b] for k, v in branches.items()})


def snarl_data(first: int, n: int, seed: int = 0) -> dict:
    """A flat DaqSnarl-like stream: evt counts up from ``first``."""
    rng = np.random.default_rng(seed + first)
    return {
        "evt": np.arange(first, first + n, dtype=np.int64),
        "kind": rng.integers(0, 4, n).astype(np.int32),
        "energy": rng.exponential(10.0, n),
        "nhits": rng.poisson(30, n).astype(np.int32),
        "ok": rng.random(n) < 0.9,
    }


class Server:
    """A ddsparentserver process started for one test, always stopped by it."""

    def __init__(self, data_dir, *args, env=None, log_file=None):
        self.data_dir = str(data_dir)
        self.log_path = Path(log_file) if log_file else Path(data_dir).parent / f"server-{time.monotonic_ns()}.log"
        cmd = [str(BIN / "ddsparentserver"), "-p", "0", "-b", "127.0.0.1", "-d", self.data_dir, "-l", "Debug",
               "--log-file", str(self.log_path), *args]
        self.proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.port = self._wait_port()
        self.host = "127.0.0.1"

    def _wait_port(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.exists():
                m = re.search(r"listening on [\d.]+:(\d+)", self.log_path.read_text())
                if m:
                    return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("server did not start listening")

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def children(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=,stat=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(line.split()[0]) for line in out.stdout.splitlines() if line.strip()]

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        return self.proc.returncode


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def server_factory():
    started = []

    def start(data_dir, *args, **kw):
        s = Server(data_dir, *args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def server(data_dir, server_factory):
    return server_factory(data_dir)
