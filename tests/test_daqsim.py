"""The simulated DAQ writes real ROOT files that hold exactly what it reports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import awkward as ak
import numpy as np
import pytest
import uproot

from demo.daqsim import (
    DAQ_MONITOR,
    DCS_MONITOR,
    SNARL,
    STREAMS,
    TRIGGER_SOURCES,
    DaqSimulator,
    file_name,
    parse_file_name,
)
from dispatcher.testing import wait_until

START = 1_700_000_000.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def root_files(path) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(".root"))


def read(path, name, stream):
    return uproot.open(os.path.join(path, name))[stream].arrays()


def check_files_match_report(path, written):
    """Every file on disk holds exactly the entries reported, with consistent numbering."""
    snarls = []
    for name in root_files(path):
        run, subrun = parse_file_name(name)
        with uproot.open(os.path.join(path, name)) as f:
            for stream in STREAMS:
                tree = f[stream]
                assert tree.num_entries == written[name][stream], (name, stream)
                arrays = tree.arrays()
                assert np.all(arrays.run == run) and np.all(arrays.subrun == subrun)
                assert np.all(np.diff(arrays.time) > 0)
            snarl = f[SNARL].arrays()
            assert ak.all(ak.num(snarl.plane) == snarl.nhits)
            assert ak.all(ak.num(snarl.strip) == snarl.nhits)
            assert ak.all(ak.num(snarl.adc) == snarl.nhits)
            snarls.append(snarl.snarl.to_numpy())
    return np.concatenate(snarls)


def test_files_hold_exactly_what_the_simulator_reports(tmp_path):
    totals = dict.fromkeys(STREAMS, 0)
    with DaqSimulator(tmp_path, start_time=START, seconds_per_file=2.0, dcs_rate=1.0,
                      monitor_rate=2.0) as sim:
        for _ in range(131):  # 6.55 simulated seconds: four files
            for stream, n in sim.step().items():
                totals[stream] += n
    names = root_files(tmp_path)
    assert names == [file_name(12345, s) for s in range(4)]
    assert sorted(sim.written) == names
    for stream in STREAMS:
        assert sum(w[stream] for w in sim.written.values()) == totals[stream]
    snarls = check_files_match_report(tmp_path, sim.written)
    np.testing.assert_array_equal(snarls, np.arange(totals[SNARL]))
    assert 1000 < totals[SNARL] < 1600  # 200 Hz for 6.5 s
    assert totals[DAQ_MONITOR] == 13 and totals[DCS_MONITOR] == 6


def test_time_rotation_puts_each_record_in_the_file_of_its_time(tmp_path):
    with DaqSimulator(tmp_path, start_time=START, seconds_per_file=1.0, monitor_rate=4.0) as sim:
        for _ in range(70):
            sim.step()
    for i, name in enumerate(root_files(tmp_path)):
        for stream in (SNARL, DAQ_MONITOR):
            t = read(tmp_path, name, stream).time.to_numpy()
            assert np.all((t >= START + i) & (t < START + i + 1)), (name, stream)


def test_rotates_by_record_count(tmp_path):
    with DaqSimulator(tmp_path, start_time=START, records_per_file=50, seconds_per_file=None) as sim:
        for _ in range(60):
            sim.step()
    names = root_files(tmp_path)
    counts = [sim.written[n][SNARL] for n in names]
    assert len(names) >= 10
    assert all(c == 50 for c in counts[:-1]) and 0 < counts[-1] <= 50
    snarls = check_files_match_report(tmp_path, sim.written)
    np.testing.assert_array_equal(snarls, np.arange(sum(counts)))


def test_keep_files_removes_the_oldest(tmp_path):
    with DaqSimulator(tmp_path, start_time=START, records_per_file=20, keep_files=3) as sim:
        for _ in range(40):
            sim.step()
    names = root_files(tmp_path)
    assert names == sorted(sim.written)[-3:]
    assert sim.removed == sorted(sim.written)[:-3]
    check_files_match_report(tmp_path, sim.written)


def test_a_new_file_appears_only_with_its_trees_and_first_records(tmp_path):
    with DaqSimulator(tmp_path, start_time=START, seconds_per_file=None) as sim:
        sim.step()
        first = sim.current_file
        second = sim.rotate()
        assert second == file_name(12345, 1)
        assert root_files(tmp_path) == [first]  # not there before it has records
        assert any(n.endswith(".tmp") and n.startswith(".") for n in os.listdir(tmp_path))
        while not sim.step()[SNARL]:
            pass
        assert root_files(tmp_path) == [first, second]
        # readable while still being written: every stream's tree is there
        with uproot.open(tmp_path / second) as f:
            assert set(f.keys(cycle=False)) == set(STREAMS)
            assert f[SNARL].num_entries == sim.written[second][SNARL]
    assert sorted(os.listdir(tmp_path)) == [first, second]  # no temp file left


def test_a_file_that_never_got_records_is_discarded(tmp_path):
    # one DaqMonitor record at +1 s; the file rotates at +1.5 s; nothing after that
    with DaqSimulator(tmp_path, start_time=START, snarl_rate=0.0, dcs_rate=0.0,
                      seconds_per_file=1.5) as sim:
        for _ in range(35):
            sim.step()
        assert sim.current_file == file_name(12345, 1)
    assert os.listdir(tmp_path) == [file_name(12345, 0)]
    assert sim.written == {file_name(12345, 0): {SNARL: 0, DAQ_MONITOR: 1, DCS_MONITOR: 0}}


def test_empty_steps_add_no_baskets(tmp_path):
    with DaqSimulator(tmp_path, start_time=START, snarl_rate=5.0, seconds_per_file=None) as sim:
        non_empty = sum(bool(sim.step()[SNARL]) for _ in range(40))
    tree = uproot.open(tmp_path / file_name(12345, 0))[SNARL]
    assert 0 < non_empty < 40
    assert tree["snarl"].num_baskets == non_empty


def test_same_seed_same_data(tmp_path):
    for sub in ("a", "b"):
        with DaqSimulator(tmp_path / sub, start_time=START, seed=7) as sim:
            for _ in range(10):
                sim.step()
    for stream in STREAMS:
        a = read(tmp_path / "a", file_name(12345, 0), stream)
        b = read(tmp_path / "b", file_name(12345, 0), stream)
        assert a.tolist() == b.tolist()


def test_records_look_physical(tmp_path):
    with DaqSimulator(tmp_path, start_time=START, seconds_per_file=None, dcs_rate=2.0) as sim:
        for _ in range(100):
            sim.step()
    snarl = read(tmp_path, file_name(12345, 0), SNARL)
    assert set(np.unique(snarl.trigsrc.to_numpy())) <= set(TRIGGER_SOURCES)
    assert ak.all(snarl.plane >= 0) and ak.all(snarl.plane < 486)
    assert ak.all(snarl.strip >= 0) and ak.all(snarl.strip < 192)
    assert 100 < np.median(ak.flatten(snarl.adc).to_numpy()) < 600
    monitor = read(tmp_path, file_name(12345, 0), DAQ_MONITOR)
    assert ak.all(ak.num(monitor.crate_rate) == 16) and ak.all(monitor.ncrates == 16)
    assert 120 < np.mean(monitor.trigger_rate.to_numpy()) < 280
    # DaqMonitor.snarl is the latest snarl at its time
    for t, s in zip(monitor.time.to_numpy(), monitor.snarl.to_numpy()):
        assert s == snarl.snarl[snarl.time <= t][-1]
    dcs = read(tmp_path, file_name(12345, 0), DCS_MONITOR)
    assert np.all(np.abs(dcs.hv.to_numpy() - 850.0) < 20.0)


def test_an_existing_run_is_refused(tmp_path):
    with DaqSimulator(tmp_path, start_time=START) as sim:
        sim.step()
    with pytest.raises(FileExistsError, match="run 12345 already has files.*next free: 12346"):
        DaqSimulator(tmp_path)


def test_console_script_stops_cleanly_on_sigterm(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.daqsim", "-d", str(tmp_path), "--seconds-per-file", "0.3"],
        cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(root_files(tmp_path)) >= 3, 15, "three files", pause=0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    names = root_files(tmp_path)
    assert sorted(os.listdir(tmp_path)) == names  # no temp files
    closed = [line for line in err.splitlines() if "closed F" in line]
    assert len(closed) == len(names)
    snarls = check_files_match_report(
        tmp_path, {n: {s: uproot.open(tmp_path / n)[s].num_entries for s in STREAMS} for n in names})
    np.testing.assert_array_equal(snarls, np.arange(len(snarls)))


def test_console_script_runs_for_the_given_seconds(tmp_path):
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "demo.daqsim", "-d", str(tmp_path), "--seconds", "0.5", "--run", "7"],
        cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 20
    assert root_files(tmp_path) == [file_name(7, 0)]


def test_console_script_needs_a_data_dir(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DDS_DAQ_DATA_DIR"}
    done = subprocess.run([sys.executable, "-m", "demo.daqsim", "--seconds", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 2
    assert "--data-dir" in done.stderr
