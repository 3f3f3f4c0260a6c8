"""Baskets decompressed once for every child: the shared block cache, alone and through a real server."""

from __future__ import annotations

import os
import re
import threading
import time
import zlib

import awkward as ak
import numpy as np
import uproot

from clients import DDSClient, Subscription
from dispatcher import basketcache
from dispatcher.basketcache import MIN_BYTES, Blocks, Cache

BLOCK = np.arange(MIN_BYTES // 8 + 100, dtype=np.int64).tobytes()


def _blocks(tmp_path, children=2):
    calls = []

    def decompress(data):
        calls.append(1)
        return zlib.decompress(data)

    return Blocks(str(tmp_path), lambda: children), calls, decompress


def test_a_block_is_decompressed_once_and_then_read(tmp_path):
    blocks, calls, decompress = _blocks(tmp_path)
    data = zlib.compress(BLOCK)
    for _ in range(3):
        assert blocks.decompressed(data, len(BLOCK), lambda: decompress(data)) == BLOCK
    assert len(calls) == 1 and (blocks.hits, blocks.misses) == (2, 1)
    # another block, another key; a small one is never looked up
    other = zlib.compress(BLOCK[::-1])
    assert blocks.decompressed(other, len(BLOCK), lambda: decompress(other)) == BLOCK[::-1]
    small = zlib.compress(b"x" * 100)
    assert blocks.decompressed(small, 100, lambda: decompress(small)) == b"x" * 100
    assert len(calls) == 3 and len([n for n in os.listdir(tmp_path) if not n.endswith(".lock")]) == 2


def test_alone_a_child_writes_nothing_and_a_wrong_length_is_not_trusted(tmp_path):
    blocks, calls, decompress = _blocks(tmp_path, children=1)
    data = zlib.compress(BLOCK)
    blocks.decompressed(data, len(BLOCK), lambda: decompress(data))
    assert os.listdir(tmp_path) == []
    # a file of the wrong size under the key (it cannot be written so, but the reader checks)
    blocks2, calls2, decompress2 = _blocks(tmp_path)
    key = [n for n in os.listdir(tmp_path)]
    assert key == []
    blocks2.decompressed(data, len(BLOCK), lambda: decompress2(data))
    (name,) = os.listdir(tmp_path)
    with open(tmp_path / name, "r+b") as f:
        f.truncate(10)
    assert blocks2.decompressed(data, len(BLOCK), lambda: decompress2(data)) == BLOCK
    assert len(calls2) == 2


def test_children_asking_at_once_wait_for_the_first(tmp_path):
    data = zlib.compress(BLOCK)
    first, calls1, decompress1 = _blocks(tmp_path)
    second, calls2, decompress2 = _blocks(tmp_path)
    started, out = threading.Event(), {}

    def slow():
        started.set()
        time.sleep(0.02)
        return decompress1(data)

    t = threading.Thread(target=lambda: out.setdefault("a", first.decompressed(data, len(BLOCK), slow)))
    t.start()
    started.wait(5)
    assert second.decompressed(data, len(BLOCK), lambda: decompress2(data)) == BLOCK
    t.join(5)
    assert out["a"] == BLOCK and len(calls1) == 1 and calls2 == []  # the second waited for the first's block


def test_the_parent_keeps_the_budget_oldest_first_and_removes_everything_at_the_end(tmp_path):
    cache = Cache(budget_mb=1, root=str(tmp_path))
    assert cache.directory is not None and os.stat(cache.directory).st_mode & 0o777 == 0o700
    now = time.time()
    for i in range(6):  # 6 x 300 kB: over 1 MB
        path = os.path.join(cache.directory, f"b{i}")
        with open(path, "wb") as f:
            f.write(b"\0" * 300_000)
        os.utime(path, (now - 100 + i, now - 100 + i))
    stale = os.path.join(cache.directory, "b9.lock")
    open(stale, "wb").close()
    os.utime(stale, (now - 60, now - 60))
    cache.trim()
    left = sorted(os.listdir(cache.directory))
    assert left == ["b4", "b5"]  # under 80% of the budget, the newest kept; the dead child's lock gone
    cache.close()
    assert not os.path.exists(tmp_path / os.path.basename(left[0]))
    assert os.listdir(tmp_path) == []
    assert Cache(budget_mb=0, root=str(tmp_path)).directory is None


def test_clients_reading_the_same_file_share_its_baskets_and_get_uproots_values(data_dir, server_factory):
    path = data_dir / "F0001.root"
    n = 60_000
    rng = np.random.default_rng(1)
    with uproot.recreate(str(path)) as f:
        f.mktree("DaqSnarl", {"evt": np.int64, "e": np.float64, "adc": "var * int32"})
        for a in range(0, n, 20_000):  # big baskets: each well over MIN_BYTES decompressed
            counts = rng.integers(0, 6, 20_000)
            f["DaqSnarl"].extend({"evt": np.arange(a, a + 20_000), "e": rng.normal(size=20_000),
                                  "adc": ak.unflatten(rng.integers(0, 4096, int(counts.sum())).astype(np.int32),
                                                      counts)})
    (data_dir / "F0002.root").write_bytes(b"")  # makes F0001 closed
    server = server_factory(data_dir)
    where = re.search(r"baskets decompressed once for all children in (\S+)", server.log)
    assert where, server.log
    directory = where.group(1)
    want = uproot.open(str(path))["DaqSnarl"].arrays()
    got = {}

    def read(key):
        with DDSClient(server.host, server.port) as c:
            c.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="F0001.root"))
            parts = []
            while sum(len(p) for p in parts) < n:
                parts.append(c.next_batch(25_000, timeout=10).arrays)
            got[key] = ak.concatenate(parts)
            ready.wait(20)  # both connected until both are done: two children, so blocks are shared

    ready = threading.Barrier(2)
    threads = [threading.Thread(target=read, args=(k,)) for k in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for key in "ab":
        assert ak.array_equal(got[key], want), key
    assert [name for name in os.listdir(directory) if not name.endswith((".lock", ".tmp"))]
    server.stop()
    assert not os.path.exists(directory)
    assert basketcache.BUDGET_MB > 0


def test_a_directory_left_by_a_dead_server_is_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          timeout=30).stdout.strip()
    left = tmp_path / f"{basketcache.PREFIX}{dead}-abc"
    left.mkdir()
    (left / "block").write_bytes(b"x")
    mine = Cache(budget_mb=1, root=str(tmp_path))
    try:
        assert not left.exists()
        assert os.path.basename(mine.directory).startswith(f"{basketcache.PREFIX}{os.getpid()}-")
        Cache(budget_mb=1, root=str(tmp_path)).close()  # a live parent's directory is left alone
        assert os.path.exists(mine.directory)
    finally:
        mine.close()
