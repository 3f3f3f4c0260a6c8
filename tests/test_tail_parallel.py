"""Big reads of several plain branches go through two threads: the values are uproot's, whatever the kinds."""

from __future__ import annotations

import awkward as ak
import numpy as np
import uproot

from dispatcher import tail
from dispatcher.tail import FileReader


def _write(path, n: int) -> None:
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 5, n)
    data = {
        "evt": np.arange(n, dtype=np.int64),
        "e": rng.normal(size=n),
        "fixed": rng.normal(size=(n, 3)).astype(np.float32),
        "hits": ak.unflatten(rng.normal(size=int(counts.sum())), counts),
        "ok": rng.random(n) < 0.5,
    }
    with uproot.recreate(str(path)) as f:
        types = {k: v.type if isinstance(v, ak.Array) else (v.dtype, v.shape[1:]) for k, v in data.items()}
        tree = f.mktree("T", types)
        half = n // 2  # two baskets per branch: a read may start or end inside one
        tree.extend({k: v[:half] for k, v in data.items()})
        tree.extend({k: v[half:] for k, v in data.items()})


def test_parallel_reads_equal_uproots_own(tmp_path, monkeypatch):
    path = tmp_path / "big.root"
    n = 3 * tail.PARALLEL_ENTRIES + 17
    _write(path, n)
    calls = []
    real = tail._threads

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(tail, "_threads", counting)
    reader = FileReader(str(path))
    reader.refresh()
    names = ["evt", "e", "fixed", "hits", "ok"]
    with uproot.open(str(path)) as f:
        want = f["T"].arrays(names, library="ak")
    for start, stop in ((0, n), (5, tail.PARALLEL_ENTRIES + 5), (n - tail.PARALLEL_ENTRIES, n)):
        got = reader.read("T", names, start, stop)
        assert got.fields == want.fields
        assert ak.to_list(got) == ak.to_list(want[start:stop])
    assert len(calls) == 3  # each of those reads went through the threads ...
    small = reader.read("T", names, 0, 100)  # ... and a small one did not
    assert len(calls) == 3 and ak.to_list(small) == ak.to_list(want[:100])
    reader.close()
