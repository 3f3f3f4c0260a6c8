"""Shared fixtures: real ddsparentserver processes on loopback and real ROOT files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

from dispatcher.testing import ServerProc

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


def self_signed(cert: Path, key: Path, name: str = "localhost", alt: str = "DNS:localhost,IP:127.0.0.1") -> None:
    """Write a self-signed EC certificate for ``name`` (subjectAltName ``alt``) and its key, with openssl."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName={alt}"],
        check=True, capture_output=True, timeout=30,
    )


def ddscomm(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run the installed ``ddscomm`` with ``args``; its output as text."""
    return subprocess.run([str(BIN / "ddscomm"), *args], capture_output=True, text=True, timeout=timeout)


def end(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if it still runs, reap it and close its pipes."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()


class Server(ServerProc):
    """A ddsparentserver process started for one test (log level Debug), always stopped by it."""

    def __init__(self, data_dir, *args, log_file=None):
        super().__init__(data_dir, *args, log_file=log_file, level="Debug")


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


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for localhost and 127.0.0.1: (cert, key) paths."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    self_signed(cert, key)
    return cert, key
