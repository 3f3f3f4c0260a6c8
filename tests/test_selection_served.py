"""Random valid selections served by a real server equal a numpy evaluation of the same tree.

The generated trees, their printing in the three operator styles and the numpy
reference walk come from test_selection_properties; here the expression travels
through a subscription and the records come back over the socket.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from clients import DDSClient, DDSTimeout, Subscription
from conftest import Server, write_file
from test_selection_properties import DTYPES, SELECTIONS, STREAM, expected_selection, printed

N = 4000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("served")
    rng = np.random.default_rng(7)
    data = {
        "i": rng.integers(-10, 11, N).astype(DTYPES["i"]),
        "j": rng.integers(-10, 11, N).astype(DTYPES["j"]),
        "x": (rng.integers(-20, 21, N) / 4).astype(DTYPES["x"]),
        "y": rng.normal(0, 3, N).astype(DTYPES["y"]),
        "evt": np.arange(N, dtype=np.int64),
    }
    write_file(data_dir / "F00000001_0000.mdaq.root", {STREAM: data}, steps=4)
    server = Server(data_dir)
    client = DDSClient(server.host, server.port)
    yield client, data
    client.close()
    server.stop()


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tree=SELECTIONS)
def test_served_selection_equals_numpy_reference(served, tree):
    client, data = served
    text, _ = printed(tree)
    client.subscribe(Subscription(streams=[STREAM], keep_up="all", start="oldest", selection=text))
    client.go_to_file("F00000001_0000.mdaq.root")
    got = []
    for _ in range(50):
        try:
            got.extend(client.next_batch(5000, timeout=0.3).arrays["evt"].to_list())
        except DDSTimeout:
            break
    expected, fragile = expected_selection(tree, data, N)
    got_mask = np.zeros(N, dtype=bool)
    got_mask[got] = True
    solid = ~fragile
    np.testing.assert_array_equal(got_mask[solid], expected[solid], err_msg=text)
