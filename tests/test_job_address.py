"""The job's DDSServer setting keeps an IPv6 address usable."""

from __future__ import annotations

import pytest

from clients.iterate import parse_address
from clients.job import InputModule


@pytest.mark.parametrize("text, expected", [
    ("[::1]:9091", ("::1", 9091)),
    ("[::1]", ("::1", 9090)),
    ("localhost:9091", ("localhost", 9091)),
    ("127.0.0.1", ("127.0.0.1", 9090)),
])
def test_server_setting_round_trips_through_parse_address(text, expected):
    m = InputModule().set(f"DDSServer={text}")
    assert parse_address(m.settings["server"]) == expected


def test_server_setting_from_a_host_and_port_pair_keeps_an_ipv6_host():
    m = InputModule().set(server=("::1", 9092))
    assert parse_address(m.settings["server"]) == ("::1", 9092)
