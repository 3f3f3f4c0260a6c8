"""Load: many concurrent clients with different cuts drain the same files, each getting exactly its records."""

from __future__ import annotations

import threading

import numpy as np

from clients import DDSClient, DDSTimeout, Subscription
from conftest import snarl_data, write_file

CLIENTS = 25
PER_FILE = 20_000


def test_25_concurrent_clients_with_selections_each_receive_exactly_their_records(data_dir, server_factory):
    files = [snarl_data(i * PER_FILE, PER_FILE, seed=i) for i in range(3)]
    for i, d in enumerate(files):
        write_file(data_dir / f"F00000009_{i:04d}.mdaq.root", {"DaqSnarl": d}, steps=4)
    every = {k: np.concatenate([d[k] for d in files]) for k in files[0]}
    server = server_factory(data_dir, "-m", str(CLIENTS + 2))

    results: dict[int, list] = {}
    errors: list = []

    def drain(i: int) -> None:
        try:
            with DDSClient(server.host, server.port) as c:
                c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest",
                                         selection=f"evt % {CLIENTS} == {i} && kind != 3"))
                got = []
                for _ in range(1000):
                    try:
                        got.extend(c.next_batch(500, timeout=1.0).arrays["evt"].to_list())
                    except DDSTimeout:
                        break
                results[i] = got
        except Exception as exc:  # reported below with the client's number
            errors.append((i, exc))

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    for i in range(CLIENTS):
        truth = every["evt"][(every["evt"] % CLIENTS == i) & (every["kind"] != 3)]
        assert results[i] == truth.tolist(), f"client {i}"
    assert server.proc.poll() is None
