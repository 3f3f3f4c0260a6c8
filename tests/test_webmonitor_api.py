"""ddsmonitor's HTTP API in-process: real histograms, uhi JSON, serials, server-sent events, publishing."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import awkward as ak
import hist
import httpx
import numpy as np
import pytest
import uvicorn
from uhi.io.json import default, object_hook

from clients.monitor.app import create_app
from clients.monitor.config import parse_config
from clients.monitor.filling import HistogramFiller
from clients.monitor.packages import PackageStore

TOKEN = "s3cret-token-for-tests"

CONFIG = """\
[monitor]
update_interval = 0.05

[[histogram]]
name = "nhits"
stream = "DaqSnarl"
x = "nhits"
bins = 10
range = [0, 100]

[[histogram]]
name = "adc_vs_plane"
stream = "DaqSnarl"
x = "plane"
y = "adc"
bins = [4, 5]
range = [[0, 4], [0, 100]]

[[histogram]]
name = "hv"
kind = "mean"
stream = "DcsMonitor"
y = "hv"
span = 10
bins = 10

[[package]]
name = "daq"
histograms = ["nhits", "adc_vs_plane"]

[[package]]
name = "dcs"
histograms = ["hv"]
"""


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_store(clock=None):
    config = parse_config(CONFIG, "monitor.toml")
    fillers = {name: HistogramFiller(spec, **({"clock": clock} if clock else {}))
               for name, spec in config.histograms.items()}
    return PackageStore(config, fillers)


def snarls(nhits, planes=None, adcs=None):
    planes = planes if planes is not None else [[0] * n for n in nhits]
    adcs = adcs if adcs is not None else [[10.0] * n for n in nhits]
    return ak.Array({"nhits": nhits, "plane": planes, "adc": adcs})


def fill(store, name, arrays, file="F1.root"):
    store.fillers[name].fill(arrays, file)
    store.touched(name)


def load(data) -> hist.Hist:
    return hist.Hist(json.loads(json.dumps(data, default=default), object_hook=object_hook))


@contextlib.contextmanager
def serving(app):
    """The app under uvicorn on a free loopback port, in a thread; stopped on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()


def test_a_package_is_uhi_json_that_hist_loads_back_equal():
    store = make_store()
    values = [5, 15, 15, 95, 120]
    fill(store, "nhits", snarls(values, planes=[[0, 1]] * 5, adcs=[[10.0, 55.0]] * 5))
    fill(store, "adc_vs_plane", snarls(values, planes=[[0, 1]] * 5, adcs=[[10.0, 55.0]] * 5))
    assert store.publish_changes() == [{"name": "daq", "serial": 1}]
    package = json.loads(store.body("daq"), object_hook=object_hook)
    got = hist.Hist(package["objects"]["nhits"])
    expected = hist.Hist.new.Reg(10, 0, 100).Double().fill(values)
    assert np.array_equal(got.values(flow=True), expected.values(flow=True))
    assert package["objects"]["nhits"]["metadata"]["entries"] == 5
    plane_adc = hist.Hist(package["objects"]["adc_vs_plane"])
    assert plane_adc.values()[0, 0] == 5 and plane_adc.values()[1, 2] == 5  # list branches: one entry per element
    assert package["objects"]["adc_vs_plane"]["metadata"]["entries"] == 10


def test_the_serial_grows_only_for_the_package_that_changed():
    store = make_store()
    fill(store, "nhits", snarls([1]))
    fill(store, "hv", ak.Array({"time": [100.5, 101.5], "hv": [850.0, 852.0]}))
    assert store.publish_changes() == [{"name": "daq", "serial": 1}, {"name": "dcs", "serial": 1}]
    assert store.publish_changes() == []
    fill(store, "hv", ak.Array({"time": [102.5], "hv": [851.0]}))
    assert store.publish_changes() == [{"name": "dcs", "serial": 2}]
    assert store.listing() == [{"name": "daq", "serial": 1}, {"name": "dcs", "serial": 2}]
    hv = load(json.loads(store.body("dcs"))["objects"]["hv"])
    assert hv.values()[-1] == pytest.approx(851.0) and hv.values()[-3] == pytest.approx(850.0)


def test_a_time_graph_follows_the_newest_record_and_keeps_what_is_in_its_span():
    store = make_store()
    filler = store.fillers["hv"]
    filler.fill(ak.Array({"time": [100.5], "hv": [1.0]}), "F1.root")
    filler.fill(ak.Array({"time": [105.5], "hv": [2.0]}), "F1.root")
    h = filler.current()
    assert h.axes[0].edges[-1] == 106.0 and h.values()[-1] == 2.0 and h.values()[-6] == 1.0
    filler.fill(ak.Array({"time": [112.5], "hv": [3.0]}), "F1.root")  # 7 s later: the 100.5 bin left the span
    h = filler.current()
    assert h.axes[0].edges[0] == 103.0 and h.counts().sum() == 2


def test_reset_at_each_new_file_and_sliding_windows():
    text = CONFIG.replace('range = [0, 100]\n', 'range = [0, 100]\nreset = "file"\n', 1)
    config = parse_config(text.replace("bins = [4, 5]", "bins = [4, 5]\nreset = 10"), "m.toml")
    clock = FakeClock()
    per_file = HistogramFiller(config.histograms["nhits"])
    per_file.fill(snarls([1, 2]), "F1.root")
    per_file.fill(snarls([3]), "F1.root")
    assert per_file.current().sum() == 3
    per_file.fill(snarls([4]), "F2.root")
    assert per_file.current().sum() == 1
    window = HistogramFiller(config.histograms["adc_vs_plane"], clock=clock)
    window.fill(snarls([1, 1]), "F1.root")
    clock.now += 6
    window.fill(snarls([1]), "F1.root")
    assert window.current().sum() == 3 and not window.expire()
    clock.now += 5  # the first fill is now 11 s old
    assert window.expire() and window.current().sum() == 1


def test_the_event_stream_announces_only_changed_packages():
    store = make_store()
    app = create_app(store, token=TOKEN)
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        with client.stream("GET", "/api/events") as events:
            lines = events.iter_lines()
            first = next_event(lines)
            assert first["packages"] == [{"name": "daq", "serial": 0}, {"name": "dcs", "serial": 0}]
            fill(store, "hv", ak.Array({"time": [100.5], "hv": [850.0]}))
            assert next_event(lines)["packages"] == [{"name": "dcs", "serial": 1}]
            fill(store, "nhits", snarls([7]))
            assert next_event(lines)["packages"] == [{"name": "daq", "serial": 1}]
        assert client.get("/api/packages").json() == [{"name": "daq", "serial": 1}, {"name": "dcs", "serial": 1}]
        assert client.get("/api/packages/dcs").json()["serial"] == 1
        missing = client.get("/api/packages/dsc")
        assert missing.status_code == 404 and "did you mean 'dcs'" in missing.json()["error"]
        page = client.get("/", headers={"Accept-Encoding": "gzip"})
        assert page.status_code == 200 and "static/uPlot.iife.min.js" in page.text
        assert client.get("/static/uPlot.iife.min.js").status_code == 200


def next_event(lines, limit: int = 50) -> dict:
    """The data of the next ``packages`` event (keep-alive ticks skipped), within ``limit`` lines."""
    kind = None
    for _, line in zip(range(limit), lines):
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind == "packages":
            return json.loads(line[6:])
    raise AssertionError(f"no packages event within {limit} lines")


def published(name="shift", counts=(1, 2, 3)):
    h = hist.Hist.new.Reg(3, 0, 3, name="x").Double()
    h.view()[:] = counts
    return {"name": name, "objects": {"occupancy": json.loads(json.dumps(h, default=default))}}


def test_publishing_needs_the_token_and_then_shows_the_package():
    store = make_store()
    with serving(create_app(store, token=TOKEN)) as url, httpx.Client(base_url=url, timeout=10) as client:
        refused = client.post("/api/packages", json=published())
        assert refused.status_code == 401 and "Authorization: Bearer" in refused.json()["error"]
        wrong = client.post("/api/packages", json=published(), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert [p["name"] for p in client.get("/api/packages").json()] == ["daq", "dcs"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ok = client.post("/api/packages", json=published(), headers=auth)
        assert ok.status_code == 200 and ok.json() == {"name": "shift", "serial": 1}
        again = client.post("/api/packages", json={**published(counts=(4, 5, 6)), "serial": 41}, headers=auth)
        assert again.json() == {"name": "shift", "serial": 41}
        got = client.get("/api/packages/shift").json()
        occupancy = load(got["objects"]["occupancy"])
        assert occupancy.values().tolist() == [4, 5, 6] and got["objects"]["occupancy"]["metadata"]["entries"] == 15
        taken = client.post("/api/packages", json=published(name="daq"), headers=auth)
        assert taken.status_code == 409 and "filled from DDS" in taken.json()["error"]
        bad = client.post("/api/packages", json={"name": "x", "objects": {"h": {"uhi_schema": 1, "axes": []}}},
                          headers=auth)
        assert bad.status_code == 400 and "'axes' must be a non-empty list" in bad.json()["error"]
        huge = published()
        huge["objects"]["occupancy"]["axes"][0]["bins"] = 10**9
        assert client.post("/api/packages", json=huge, headers=auth).status_code == 400
        assert client.post("/api/packages", content=b"{not json", headers=auth).status_code == 400


def test_a_monitor_without_a_token_is_read_only():
    with serving(create_app(make_store(), token=None)) as url, httpx.Client(base_url=url, timeout=10) as client:
        answer = client.post("/api/packages", json=published(), headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 403 and "--token-file" in answer.json()["error"]
        assert client.get("/api/layout").json()["tabs"][0]["title"] == "daq"
