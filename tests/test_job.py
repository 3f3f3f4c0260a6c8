"""MINOS-style jobs: the DDS input module feeds paths of modules until a timeout."""

from __future__ import annotations

import io
import subprocess
import threading
import time

import numpy as np
import pytest

from clients import DDSConnectionError, DDSError, KeepUp, MessageType, Subscription
from clients.job import EventDump, Histogram, Job, Module, RunSummary, text_histogram
from conftest import BIN, Server, snarl_data, write_file


def monitor_data(first: int, n: int) -> dict:
    return {"evt": np.arange(first, first + n, dtype=np.int64) * 10, "rate": np.linspace(1.0, 2.0, n)}


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("job") / "data"


@pytest.fixture(scope="module")
def files(shared_dir):
    """Two files: 120 + 80 DaqSnarl records (evt 0..199) and a DaqMonitor record every 10 evts."""
    data_dir = shared_dir
    data_dir.mkdir()
    write_file(data_dir / "F00000001_0000.mdaq.root",
               {"DaqSnarl": snarl_data(0, 120), "DaqMonitor": monitor_data(0, 12)}, steps=3)
    write_file(data_dir / "F00000001_0001.mdaq.root",
               {"DaqSnarl": snarl_data(120, 80), "DaqMonitor": monitor_data(12, 8)}, steps=2)
    return {"DaqSnarl": {k: np.concatenate([snarl_data(0, 120)[k], snarl_data(120, 80)[k]])
                         for k in snarl_data(0, 1)}}


@pytest.fixture(scope="module")
def server(files, shared_dir):
    """One server on the files for every test of this module that only reads."""
    s = Server(shared_dir)
    yield s
    s.stop()


def job_for(server, *settings, **keywords) -> Job:
    return Job(f"DDSServer={server.host}:{server.port}", "DDSKeepUpMode=All", "DDSStart=oldest",
               "DDSTimeOut=1", *settings, **keywords)


class Recorder(Module):
    """Notes every call in a shared log."""

    def __init__(self, log, label, keep=None):
        super().__init__(name=label)
        self.log, self.keep = log, keep

    def begin(self):
        self.log.append((self.name, "begin"))

    def process(self, rs):
        self.log.append((self.name, rs["DaqSnarl"]["evt"]))
        if self.keep is not None:
            return self.keep(rs)

    def end(self):
        self.log.append((self.name, "end"))


def test_modules_run_in_path_order_and_false_stops_the_path_for_that_record_set(files, server):
    log = []
    job = job_for(server)
    job.path("Demo").mod(Recorder(log, "first")).mod(
        Recorder(log, "even", keep=lambda rs: rs["DaqSnarl"]["evt"] % 2 == 0))
    job.path("Demo").mod(Recorder(log, "last"))
    summary = job.path("Demo").run()

    assert log[:3] == [("first", "begin"), ("even", "begin"), ("last", "begin")]
    assert log[-3:] == [("first", "end"), ("even", "end"), ("last", "end")]
    calls = log[3:-3]
    expected = []
    for evt in range(200):
        expected += [("first", evt), ("even", evt)] + ([("last", evt)] if evt % 2 == 0 else [])
    assert calls == expected
    assert summary.records == 200 and summary.streams == {"DaqSnarl": 200}
    assert [(n, c.processed, c.passed, c.failed) for n, c in summary.modules.items()] == [
        ("first", 200, 200, 0), ("even", 200, 100, 100), ("last", 100, 100, 0)]


def test_run_ends_at_the_timeout_like_a_minos_job_and_says_why(files, server):
    job = job_for(server, "DDSTimeOut=1.5")
    job.path("Demo").mod(lambda rs: None)
    began = time.monotonic()
    summary = job.path("Demo").run()
    assert summary.reason == "timeout" and summary.ok
    assert summary.message_type is MessageType.TIMEOUT
    assert summary.records == 200
    assert 1.4 < time.monotonic() - began < 30
    assert "stopped: timeout" in str(summary) and "200 record sets" in str(summary)


def test_max_records_stops_the_run_after_that_many_record_sets(files, server):
    seen = []
    job = job_for(server, "DDSTimeOut=60")
    summary = job.path().mod(lambda rs: seen.append(rs.entries["DaqSnarl"])).run(max_records=7)
    assert seen == list(range(7))
    assert summary.reason == "max_records" and summary.records == 7


def test_string_settings_and_keywords_make_the_same_subscription():
    minos = Job("DDSKeepUpMode=All", "DDSTimeOut=120", "DDSSelection=evt % 10 == 0 && kind == 4",
                "DDSStreams=DaqSnarl, DaqMonitor", "DDSServer=daq01:9091", "DDSPrescale=2", "DDSStart=oldest")
    keywords = Job(keep_up="all", timeout=120, selection="evt % 10 == 0 && kind == 4",
                   streams=["DaqSnarl", "DaqMonitor"], server="daq01:9091", prescale=2, start="oldest")
    want = Subscription(streams=("DaqSnarl", "DaqMonitor"), keep_up="all", selection="evt % 10 == 0 && kind == 4",
                        prescale=2, start="oldest")
    assert minos.input.subscription() == keywords.input.subscription() == want
    assert minos.input.settings == keywords.input.settings
    assert minos.input.server == "daq01:9091" and minos.input.timeout == 120.0
    # the MINOS spellings of the methods and of the keep-up modes
    j = Job()
    j.Input.Set("DDSKeepUpMode=RecordKeepUp")
    assert j.input.keep_up is KeepUp.RECORD
    assert Job().input.keep_up is KeepUp.FILE  # the MINOS default
    assert Job().input.timeout == 120.0


@pytest.mark.parametrize("setting, message", [
    ("DDSKeepUp=All", "did you mean 'DDSKeepUpMode'"),
    ("DDSKeepUpMode=Sometimes", "'all', 'file', 'record'"),
    ("DDSTimeOut=soon", "DDSTimeOut must be a number of seconds"),
    ("DDSTimeOut=-1", "positive"),
    ("DDSServer=daq01:port", "port"),
    ("DDSKeepUpMode", "KEY=VALUE"),
])
def test_a_wrong_setting_is_refused_naming_what_would_be_right(setting, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Job().input.set(setting)


def test_the_selection_runs_on_the_server(files, server):
    evts = []
    job = job_for(server, "DDSSelection=evt % 10 == 0 && kind == 2", "DDSBranches=evt,kind")
    job.path().mod(lambda rs: evts.append((rs["DaqSnarl"]["evt"], set(rs["DaqSnarl"]))))
    summary = job.run()
    data = files["DaqSnarl"]
    want = data["evt"][(data["evt"] % 10 == 0) & (data["kind"] == 2)].tolist()
    assert 0 < len(want) < 20
    assert [e for e, _ in evts] == want
    assert all(fields == {"evt", "kind"} for _, fields in evts)
    assert summary.records == len(want)


def test_synced_record_sets_hold_every_stream(files, server):
    sets = []
    job = job_for(server, "DDSStreams=DaqSnarl,DaqMonitor", "DDSSync=evt", "DDSSelection=evt % 50 == 0")
    job.path().mod(lambda rs: sets.append((rs["DaqSnarl"]["evt"], rs["DaqMonitor"]["rate"] > 0, sorted(rs.records))))
    job.run()
    assert sets == [(evt, True, ["DaqMonitor", "DaqSnarl"]) for evt in (0, 50, 100, 150)]


def test_event_dump_prints_one_line_per_record_set(files, server):
    out = io.StringIO()
    job = job_for(server, "DDSSelection=evt < 3", "DDSBranches=evt,kind,nhits")
    job.path().mod("EventDump", out=out)
    job.run()
    lines = out.getvalue().splitlines()
    data = files["DaqSnarl"]
    assert lines == [f"F00000001_0000.mdaq.root DaqSnarl[{i}] evt={i} kind={data['kind'][i]} nhits={data['nhits'][i]}"
                     for i in range(3)]


def test_event_dump_every_and_dump_fragments(data_dir, server_factory):
    import awkward as ak

    write_file(data_dir / "F00000001_0000.mdaq.root",
               {"DaqSnarl": {"evt": np.arange(6, dtype=np.int64),
                             "adc": ak.Array([[1.5, 2.0], [], [3.0], [4.0], [], [7.25]])}})
    server = server_factory(data_dir)
    short, full = io.StringIO(), io.StringIO()
    job = job_for(server)
    job.path().mod("EventDump", every=2, out=short).mod("EventDump", out=full).cmd("Dump Fragments")
    job.run()
    assert short.getvalue().splitlines() == [
        "F00000001_0000.mdaq.root DaqSnarl[0] evt=0 nadc=2 adc=[2]",
        "F00000001_0000.mdaq.root DaqSnarl[2] evt=2 nadc=1 adc=[1]",
        "F00000001_0000.mdaq.root DaqSnarl[4] evt=4 nadc=0 adc=[0]",
    ]
    assert full.getvalue().splitlines()[0] == "F00000001_0000.mdaq.root DaqSnarl[0] evt=0 nadc=2 adc=[1.5, 2]"
    assert job.path().names() == ["EventDump", "EventDump#2"]


def test_histogram_fills_a_branch_and_prints_it_at_the_end(files, server):
    out = io.StringIO()
    job = job_for(server)
    job.path().mod("Histogram", branch="nhits", bins=10, range=(0, 60), out=out)
    job.run()
    h = job.path().module("Histogram").hist
    nhits = files["DaqSnarl"]["nhits"]
    counts, _ = np.histogram(nhits, bins=10, range=(0, 60))
    assert np.array_equal(h.values(), counts)
    assert h.values(flow=True)[-1] == np.count_nonzero(nhits >= 60)
    text = out.getvalue()
    assert text.startswith(f"DaqSnarl nhits: 200 entries, mean {nhits.mean():.4g}")
    bars = [line for line in text.splitlines() if "|" in line]
    assert len(bars) == 10
    assert max(bars, key=lambda line: line.count("#")).endswith(f"| {counts.max()}")


def test_histogram_of_a_list_branch_fills_every_element():
    import hist

    from clients.records import RecordSet

    m = Histogram(stream="S", branch="adc", bins=4, range=(0, 4), show=False)
    m.begin()
    for values in ([0.5, 1.5, 1.7], [], [3.5]):
        m.process(RecordSet("f.root", {"S": {"adc": values}}, {"S": 0}))
    m.process(RecordSet("f.root", {"Other": {"adc": 1.0}}, {"Other": 0}))  # not its stream: ignored
    m.end()
    assert isinstance(m.hist, hist.Hist)
    assert m.hist.values().tolist() == [1, 2, 0, 1]
    assert m.mean == pytest.approx((0.5 + 1.5 + 1.7 + 3.5) / 4)
    assert "|" in text_histogram(m.hist)


def test_end_runs_even_when_a_module_raises(files, server):
    log = []

    def broken(rs):
        if rs["DaqSnarl"]["evt"] == 5:
            raise RuntimeError("bad record")

    job = job_for(server)
    job.path().mod(Recorder(log, "rec")).mod(broken)
    with pytest.raises(RuntimeError, match="bad record"):
        job.run()
    assert log[-1] == ("rec", "end")
    assert _children_gone(server)  # the session was closed


def _children_gone(server, seconds=10.0) -> bool:
    deadline = time.monotonic() + seconds
    while server.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.children() == []


def test_a_server_shutdown_ends_the_run_with_reason_shutdown(files, shared_dir, server_factory):
    server = server_factory(shared_dir)
    result = {}
    job = job_for(server, "DDSTimeOut=60")
    job.path().mod(lambda rs: None)
    thread = threading.Thread(target=lambda: result.update(summary=job.run()))
    thread.start()
    deadline = time.monotonic() + 20
    while not server.children() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # the job has read everything and waits for more
    assert server.stop() == 0
    thread.join(30)
    assert not thread.is_alive()
    summary: RunSummary = result["summary"]
    assert summary.reason == "shutdown" and summary.message_type is MessageType.SHUTDOWN
    assert summary.records == 200


def test_no_server_raises_at_run(data_dir, server_factory):
    server = server_factory(data_dir)
    port = server.port
    server.stop()
    job = Job(server=f"127.0.0.1:{port}")
    job.path().mod("EventDump")
    with pytest.raises(DDSConnectionError, match=str(port)):
        job.run()


def test_a_bad_selection_raises_at_run_naming_the_branch(files, server):
    job = job_for(server, "DDSSelection=nhit > 3")
    job.path().mod("EventDump")
    with pytest.raises(DDSError) as err:
        job.run()
    assert err.value.message_type is MessageType.BAD_SELECTION and "nhits" in str(err.value)


def test_unknown_module_names_and_settings_are_refused_with_a_hint():
    with pytest.raises(ValueError, match="did you mean 'EventDump'"):
        Job().path().mod("EventDumb")
    with pytest.raises(ValueError, match="no setting 'bin'.*bins"):
        Job().path().mod("Histogram", bin=10)
    assert EventDump().cmd("Set every=5").every == 5


def ddsjob(*args, cwd, timeout=60):
    return subprocess.run([str(BIN / "ddsjob"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


ANALYSIS = '''
from clients.job import Module


class BigEvents(Module):
    threshold = 35

    def process(self, record_set):
        return record_set["DaqSnarl"]["nhits"] > self.threshold


class Counter(Module):
    def begin(self):
        self.n = 0

    def process(self, record_set):
        self.n += 1

    def end(self):
        print(f"counted {self.n} big events")
'''


def test_ddsjob_runs_the_module_classes_of_a_file_in_order(files, server, tmp_path):
    (tmp_path / "analysis.py").write_text(ANALYSIS)
    r = ddsjob("analysis.py", "-H", server.host, "-p", str(server.port), "-s", "DDSKeepUpMode=All",
               "-s", "DDSStart=oldest", "-s", "DDSTimeOut=1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    big = int(np.count_nonzero(files["DaqSnarl"]["nhits"] > 35))
    assert f"counted {big} big events" in r.stdout
    assert "stopped: timeout" in r.stdout
    assert "path Main (BigEvents -> Counter)" in r.stderr


def test_ddsjob_file_with_configure_sets_the_job_up_itself(files, server, tmp_path):
    (tmp_path / "configured.py").write_text(
        "def configure(job):\n"
        "    job.input.set('DDSKeepUpMode=All', 'DDSStart=oldest', 'DDSTimeOut=1', 'DDSSelection=evt >= 198')\n"
        "    job.path('Dump').mod('EventDump', branches=['evt'])\n")
    r = ddsjob("configured.py", "-p", str(server.port), "-H", server.host, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if "DaqSnarl[" in line] == [
        "F00000001_0001.mdaq.root DaqSnarl[78] evt=198", "F00000001_0001.mdaq.root DaqSnarl[79] evt=199"]
    assert "path Dump: 2 record sets" in r.stdout


def test_ddsjob_without_a_file_runs_built_in_modules(files, server, tmp_path):
    r = ddsjob("-p", str(server.port), "-H", server.host, "-s", "DDSStart=oldest", "-s", "DDSTimeOut=1",
               "-s", "DDSKeepUpMode=All", "-m", "Histogram", "-s", "DDSStreams=DaqSnarl", "-n", "50", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "DaqSnarl nhits: 50 entries" in r.stdout
    assert "stopped: max_records" in r.stdout


def test_ddsjob_reports_a_refused_subscription_and_exits_1(files, server, tmp_path):
    r = ddsjob("-p", str(server.port), "-H", server.host, "-s", "DDSSelection=nhit > 3", cwd=tmp_path)
    assert r.returncode == 1
    assert "did you mean 'nhits'" in r.stderr


def test_ddsjob_usage_errors_exit_2(tmp_path):
    (tmp_path / "empty.py").write_text("x = 1\n")
    r = ddsjob("empty.py", cwd=tmp_path)
    assert r.returncode == 2 and "defines no modules" in r.stderr
    r = ddsjob("-s", "DDSTimeOut", cwd=tmp_path)
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr

