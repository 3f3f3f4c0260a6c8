"""ddsmonitor's config: every mistake names the file, the line and the key, and what would be right."""

from __future__ import annotations

import subprocess

import awkward as ak
import numpy as np
import pytest

from clients.monitor.config import ConfigError, load_config, parse_config
from clients.monitor.quantity import QuantityError, parse_quantity
from conftest import BIN, ROOT, snarl_data, write_file

GOOD = """\
[monitor]
title = "test"

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
bins = [5, 4]
range = [[0, 10], [0, 100]]
cut = "trigsrc == 1"

[[histogram]]
name = "rate"
kind = "rate"
stream = "DaqSnarl"
span = 60
bins = 30

[[package]]
name = "daq"
histograms = ["nhits", "adc_vs_plane"]

[[tab]]
title = "DAQ"
columns = 3

[[tab.canvas]]
object = "nhits"
logy = true
xlines = [50]
"""


def broken(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "monitor.toml")
    return str(info.value)


def test_a_good_config_gives_histograms_packages_and_tabs():
    config = parse_config(GOOD, "monitor.toml")
    assert [h.kind for h in config.histograms.values()] == ["hist1d", "hist2d", "rate"]
    assert config.packages["daq"].histograms == ("nhits", "adc_vs_plane")
    assert config.packages["main"].histograms == ("rate",)  # in no package: the default one
    assert config.histograms["adc_vs_plane"].branches == {"plane", "adc"}
    assert config.histograms["rate"].span == 60 and config.histograms["rate"].branches == {"time"}
    (tab,) = config.tabs
    assert tab.columns == 3 and tab.canvases[0].logy and tab.canvases[0].xlines == (50.0,)
    assert config.layout()["tabs"][0]["canvases"][0]["package"] == "daq"


def test_the_demo_config_loads():
    config = load_config(ROOT / "demo" / "monitor.toml")
    assert {"nhits", "adc_per_plane", "trigger_rate", "hv", "temp_rack"} <= set(config.histograms)
    assert config.keep_up == "file" and [t.title for t in config.tabs] == ["DAQ", "Rates", "DCS"]


def test_a_bad_bin_count_names_file_line_and_key():
    message = error_of(broken("bins = 10", "bins = -3"))
    assert message.startswith("monitor.toml, line 8: histogram 'nhits': key 'bins' must be a positive whole number")
    assert "-3" in message


def test_an_unknown_key_suggests_the_right_one():
    message = error_of(broken('x = "nhits"', 'xx = "nhits"'))
    assert "monitor.toml, line 7: histogram 'nhits': unknown key 'xx'; did you mean 'x'?" in message


def test_a_quantity_outside_the_language_is_refused_with_its_line():
    message = error_of(broken('x = "nhits"', 'x = "nhits.__class__()"'))
    assert "line 7" in message and "key 'x'" in message and "is not allowed" in message
    assert "did you mean 'sqrt'" in error_of(broken('x = "nhits"', 'x = "sqrtt(nhits)"'))


def test_a_2d_range_must_have_two_axes():
    message = error_of(broken("range = [[0, 10], [0, 100]]", "range = [0, 10]"))
    assert "line 17" in message and "[[xlow, xhigh], [ylow, yhigh]]" in message


def test_a_canvas_naming_no_histogram_says_which_exist():
    message = error_of(broken('object = "nhits"', 'object = "nhit"'))
    assert "line 36" in message and "tab 'DAQ', canvas 1" in message and "did you mean 'nhits'?" in message


def test_a_histogram_in_two_packages_is_refused():
    text = GOOD + '\n[[package]]\nname = "other"\nhistograms = ["nhits"]\n'
    assert "already in package 'daq'" in error_of(text)


def test_a_time_graph_takes_no_sliding_reset():
    message = error_of(broken("span = 60", "span = 60\nreset = 30"))
    assert "key 'reset' of a time graph" in message and "line 25" in message


def test_toml_syntax_errors_carry_the_line():
    assert "line 2" in error_of("[monitor]\ntitle = \n")


def test_ddsmonitor_exits_2_with_the_message_for_a_bad_config(tmp_path):
    path = tmp_path / "monitor.toml"
    path.write_text(broken("bins = 10", "bins = 0"))
    done = subprocess.run([str(BIN / "ddsmonitor"), "--config", str(path), "-p", "1"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert f"{path}, line 8: histogram 'nhits': key 'bins'" in done.stderr


def test_quantities_compute_per_record_and_per_element():
    arrays = ak.Array({"nhits": [1, 2, 3], "adc": [[1.0, 3.0], [], [5.0]], "trigsrc": [1, 2, 1]})
    assert parse_quantity("sum(adc) / 2").values(arrays).tolist() == [2.0, 0.0, 2.5]
    assert parse_quantity("adc * 10").values(arrays).tolist() == [[10.0, 30.0], [], [50.0]]
    assert np.isnan(parse_quantity("max(adc)").values(arrays)[1])
    assert parse_quantity("where(trigsrc == 1 && nhits > 1, nhits, 0)").values(arrays).tolist() == [0, 0, 3]
    with pytest.raises(QuantityError, match="did you mean 'nhits'"):
        parse_quantity("nhit").values(arrays, "DaqSnarl")


def test_a_cut_the_server_refuses_stops_ddsmonitor_naming_the_line_of_the_cut(data_dir, server, tmp_path):
    write_file(data_dir / "F1.root", {"DaqSnarl": snarl_data(0, 20)})
    path = tmp_path / "monitor.toml"
    path.write_text(broken('cut = "trigsrc == 1"', 'cut = "kind == 1 && nhit > 3"').replace('"plane"', '"nhits"')
                    .replace('"adc"', '"energy"'))
    done = subprocess.run([str(BIN / "ddsmonitor"), "--config", str(path), "-H", server.host, "-p", str(server.port),
                           "--port", "0"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"{path}, line 18: histogram 'adc_vs_plane', key 'cut': unknown branch 'nhit'" in done.stderr
    assert "did you mean 'nhits'?" in done.stderr
