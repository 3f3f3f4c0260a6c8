"""The benchmark code runs end to end at tiny sizes and writes every table (speed is bench/'s business)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

from conftest import ROOT

SCENARIO_TITLES = [
    "1. All records of a closed file",
    "2. Selective cut",
    "3. Single-record next()",
    "4. Live latency: append to receive",
    "5. Fan-out: concurrent clients on the same data",
    "6. Connection: connect + subscribe + first record",
    "7. Memory",
    "8. Raw transport ceiling",
    "9. Groups: a farm sharing one stream",
    "10. Live latency and child CPU as the open file grows",
]


def test_bench_runner_writes_every_scenario_with_sane_numbers(tmp_path):
    out, js = tmp_path / "PERFORMANCE.md", tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out), "--json", str(js), "--workdir",
         str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    for title in SCENARIO_TITLES:
        assert f"## {title}" in text, f"no table for {title!r}"
    # the header names the command, the machine and the versions
    assert "python -m bench.run --smoke" in text
    assert re.search(r"Machine: \d+ cores, ", text)
    assert re.search(r"uproot \d+\.\d+", text) and re.search(r"awkward \d+\.\d+", text)

    result = json.loads(js.read_text())
    assert result["failures"] == []
    keys = {s["key"] for s in result["sections"]}
    assert keys == {str(i) for i in range(1, 11)}
    rows = [row for s in result["sections"] for row in s["summary"]]
    assert len(rows) >= 15
    for row in rows:
        assert row["figure"] and row["baseline"] and row["target"], row
        if row["baseline"] != "—":
            r = row["ratio"]
            assert isinstance(r, float) and math.isfinite(r) and 0 < r < 1e6, row
    # the peers and limits are measured in the same run, not skipped: XRootD (make test installs the
    # server), Arrow Flight (the bench extra), loopback TCP and the page cache; memory per fan-out child
    names = [row["scenario"] for row in rows]
    for wanted in ("vs uproot through XRootD", "vs an Arrow Flight server", "limit: column bytes over plain TCP",
                   "limit: the file from the page cache", "PSS per serving child", "group of 4: aggregate",
                   "member killed: its records at another member", "tailing child's CPU"):
        assert any(wanted in name for name in names), f"no summary row {wanted!r} in {names}"
    # summary lines are in the markdown table too, each with its ratio
    summary = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert sum(1 for line in summary.splitlines() if line.startswith("| ") and not line.startswith("| scenario")) \
        == len(rows)


def test_bench_quantities_are_plausible(tmp_path):
    """A few figures checked against what they must be whatever the machine: rates positive, sizes in range."""
    js = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--only", "1,2,7", "--out", "-", "--json", str(js),
         "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(js.read_text())
    rows = {row["scenario"]: row for s in result["sections"] for row in s["summary"]}
    assert set(s["key"] for s in result["sections"]) == {"1", "2", "7"}
    wire = rows["2. bytes on the wire / file bytes"]
    # 2% of the records pass; with entry numbers they are well under a tenth of the (compressed) file
    assert 0 < wire["ratio"] < 0.1, wire
    rss = [r for k, r in rows.items() if k.startswith("7. child peak RSS")][0]
    assert 20 < float(rss["figure"].split()[0]) < 2000, rss  # MB, a Python process serving a small file
    assert "# DDS performance" in proc.stdout
