"""clients.iterate reads what a live server serves exactly as uproot.iterate reads the files."""

from __future__ import annotations

import os
import time

import awkward as ak
import numpy as np
import pytest
import uproot

import clients
from clients import DDSConnectionError, DDSError, MessageType
from clients.iterate import Report, parse_address
from conftest import Server
from demo.daqsim import DAQ_MONITOR, SNARL, DaqSimulator

START = 1_700_000_000.0


def daq_files(path) -> list[str]:
    return sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".root"))


def simulate(data_dir, seconds: float, **kw) -> DaqSimulator:
    """A simulated DAQ that wrote ``seconds`` of data (files of 1 s) and is still open."""
    sim = DaqSimulator(data_dir, seconds_per_file=1.0, start_time=START, seed=7, monitor_rate=4.0, **kw)
    for _ in range(round(seconds / sim.step_seconds)):
        sim.step()
    return sim


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server on three and a half seconds of DAQ data in four files (read-only for the tests)."""
    data_dir = tmp_path_factory.mktemp("daq") / "data"
    simulate(data_dir, 3.5).close()
    s = Server(data_dir)
    yield s
    s.stop()


def address(server) -> str:
    return f"{server.host}:{server.port}"


def uproot_arrays(data_dir, stream, expressions=None, cut=None, library="ak"):
    steps = list(uproot.iterate([f"{f}:{stream}" for f in daq_files(data_dir)], expressions, cut,
                                library=library))
    if library == "ak":
        return ak.concatenate(steps)
    return {k: np.concatenate([s[k] for s in steps]) for k in steps[0]}


def test_iterate_yields_what_uproot_iterate_reads_from_the_same_files(server):
    steps = list(clients.iterate(address(server), SNARL, timeout=1.0))
    assert len(steps) >= 4  # at least one step per file
    got = ak.concatenate(steps)
    want = uproot_arrays(server.data_dir, SNARL)
    assert len(want) > 500
    assert got.fields == want.fields
    assert got.to_list() == want.to_list()


def test_iterate_with_a_cut_equals_uproot_iterate_with_the_same_cut(server):
    got = ak.concatenate(list(clients.iterate(
        address(server), SNARL, ["snarl", "nhits", "adc"], cut="nhits > 100 && trigsrc == 1", timeout=1.0)))
    want = uproot_arrays(server.data_dir, SNARL, ["snarl", "nhits", "adc"], cut="(nhits > 100) & (trigsrc == 1)")
    assert 0 < len(want) < len(uproot_arrays(server.data_dir, SNARL, ["snarl"]))
    assert got.fields == ["snarl", "nhits", "adc"]
    assert got.to_list() == want.to_list()


def test_iterate_cut_with_a_reduction_over_a_jagged_branch(server):
    got = ak.concatenate(list(clients.iterate(
        address(server), SNARL, ["snarl"], cut="max(adc) > 900 and len(adc) < 60", timeout=1.0)))
    every = uproot_arrays(server.data_dir, SNARL, ["snarl", "adc"])
    mask = (ak.fill_none(ak.max(every.adc, axis=1), np.nan) > 900) & (ak.num(every.adc) < 60)
    assert 0 < ak.sum(mask) < len(every)
    assert got.snarl.to_list() == every.snarl[mask].to_list()


def test_steps_hold_one_stream_of_one_file_and_at_most_step_size_records(server):
    seen = {SNARL: [], DAQ_MONITOR: []}
    for arrays, report in clients.iterate(address(server), [SNARL, DAQ_MONITOR], ["run", "subrun", "time"],
                                          step_size=70, report=True, timeout=1.0):
        assert isinstance(report, Report)
        assert 1 <= len(arrays) <= 70 and len(report) == len(arrays)
        assert report.file.endswith(".mdaq.root")
        subrun = int(report.file.split("_")[1].split(".")[0])
        assert set(arrays.subrun.to_list()) == {subrun}  # one file per step
        assert report.entry_start == report.entries[0] and report.entry_stop == report.entries[-1] + 1
        seen[report.stream].append((report.file, report.entries, arrays))
    for stream, steps in seen.items():
        # per stream: file order, then entry order, nothing twice, nothing left out
        keys = [(f, int(e)) for f, entries, _ in steps for e in entries]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        want = uproot_arrays(server.data_dir, stream, ["run", "subrun", "time"])
        assert ak.concatenate([a for _, _, a in steps]).to_list() == want.to_list()
    assert len(seen[DAQ_MONITOR]) >= 3


def test_library_np_gives_the_dict_of_numpy_arrays_uproot_gives(server):
    steps = list(clients.iterate(address(server), SNARL, ["snarl", "trigsrc", "plane"], library="np",
                                 step_size=300, timeout=1.0))
    assert all(isinstance(s, dict) and set(s) == {"snarl", "trigsrc", "plane"} for s in steps)
    got = {k: np.concatenate([s[k] for s in steps]) for k in steps[0]}
    want = uproot_arrays(server.data_dir, SNARL, ["snarl", "trigsrc", "plane"], library="np")
    assert got["snarl"].dtype == want["snarl"].dtype and np.array_equal(got["snarl"], want["snarl"])
    assert np.array_equal(got["trigsrc"], want["trigsrc"])
    assert got["plane"].dtype == object and len(got["plane"]) == len(want["plane"])
    assert all(g.dtype == w.dtype and np.array_equal(g, w) for g, w in zip(got["plane"], want["plane"]))


def test_iterate_follows_the_open_file_and_new_files_then_ends_after_timeout(data_dir, server_factory):
    sim = simulate(data_dir, 0.5)
    server = server_factory(data_dir)
    try:
        steps = clients.iterate(address(server), SNARL, ["snarl"], timeout=2.0)
        snarls = []
        deadline = time.monotonic() + 30
        while len(snarls) < sim.written[sim.current_file][SNARL] and time.monotonic() < deadline:
            snarls += next(steps).snarl.to_list()
        for _ in range(30):  # 1.5 s more: the open file grows, then the next file appears
            sim.step()
        total = sum(w[SNARL] for w in sim.written.values())
        assert len(sim.written) == 2
        while len(snarls) < total and time.monotonic() < deadline:
            snarls += next(steps).snarl.to_list()
        assert snarls == list(range(total))
        began = time.monotonic()
        assert list(steps) == []  # nothing new: ends without an error
        assert 1.8 < time.monotonic() - began < 20
    finally:
        sim.close()


def test_a_misspelled_branch_in_the_cut_fails_at_the_call_naming_the_right_one(server):
    with pytest.raises(DDSError) as err:
        clients.iterate(address(server), SNARL, cut="nhit > 3")
    assert err.value.message_type is MessageType.BAD_SELECTION
    assert "nhits" in str(err.value)


def test_an_unknown_expression_is_a_bad_subscription(server):
    with pytest.raises(DDSError) as err:
        clients.iterate(address(server), SNARL, ["snarl", "energy"])
    assert err.value.message_type is MessageType.BAD_SUBSCRIPTION
    assert "energy" in str(err.value)


def test_expressions_per_stream_as_a_dict(server):
    fields = {}
    for arrays, report in clients.iterate(address(server), [SNARL, DAQ_MONITOR],
                                          {SNARL: ["nhits"], DAQ_MONITOR: ["trigger_rate", "crate_rate"]},
                                          report=True, timeout=1.0):
        fields.setdefault(report.stream, set()).update(arrays.fields)
    assert fields == {SNARL: {"nhits"}, DAQ_MONITOR: {"trigger_rate", "crate_rate"}}


def test_breaking_out_of_the_loop_ends_the_session(server):
    for _arrays in clients.iterate(address(server), SNARL, step_size=10, timeout=1.0):
        break
    deadline = time.monotonic() + 10
    while server.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.children() == []


def test_no_server_is_a_connection_error_naming_the_address(data_dir, server_factory):
    server = server_factory(data_dir)
    port = server.port
    server.stop()
    with pytest.raises(DDSConnectionError, match=f"127.0.0.1:{port}"):
        clients.iterate(f"127.0.0.1:{port}", SNARL)


@pytest.mark.parametrize("text, want", [
    ("localhost:9091", ("localhost", 9091)),
    ("daq01.example.org", ("daq01.example.org", 9090)),
    ("[::1]:9092", ("::1", 9092)),
    (("10.0.0.1", "9093"), ("10.0.0.1", 9093)),
])
def test_addresses_are_host_colon_port(text, want):
    assert parse_address(text) == want


@pytest.mark.parametrize("bad", ["", "host:port", "host:0", ":9090"])
def test_bad_addresses_are_refused_with_the_address_named(bad):
    with pytest.raises(ValueError, match="address|port"):
        parse_address(bad)


def test_readers_of_one_group_share_the_records_once(server):
    import threading

    got: dict[int, list] = {0: [], 1: []}

    def read(i):
        for arrays, rep in clients.iterate(address(server), SNARL, ["snarl"], step_size=50, timeout=1.0,
                                           group="iterate-farm", report=True):
            assert len(arrays) == len(rep.entries) <= 50
            got[i].extend((rep.file, int(e)) for e in rep.entries)
            time.sleep(0.005)

    threads = [threading.Thread(target=read, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    both = got[0] + got[1]
    assert got[0] and got[1] and len(both) == len(set(both))
    want = set()
    for f in daq_files(server.data_dir):
        n = uproot.open(f)[SNARL].num_entries
        want.update((os.path.basename(f), e) for e in range(n))
    assert set(both) == want
    # a reader that leaves its loop early acknowledges what it was given: the group goes on after it
    first = next(iter(clients.iterate(address(server), SNARL, step_size=10, timeout=1.0, group="iterate-late")))
    rest = list(clients.iterate(address(server), SNARL, step_size=1000, timeout=1.0, group="iterate-late"))
    assert len(first) + sum(len(a) for a in rest) == len(want)
