"""Who counts as loopback: the check that guards ``ddscomm -s``."""

from __future__ import annotations

import pytest

from dispatcher.access import is_loopback


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.5.5.5", "127.255.255.254", "::1", "::ffff:127.0.0.1", "::ffff:127.9.8.7", "::1%lo",
     ("127.0.0.1", 40000), ("::1", 40000, 0, 0), ("::ffff:127.0.0.1", 5, 0, 0)],
    ids=str,
)
def test_loopback_addresses_are_loopback(address):
    assert is_loopback(address) is True


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "192.168.1.1", "8.8.8.8", "0.0.0.0", "::", "::ffff:10.0.0.1", "2001:db8::1", "fe80::1%eth0",
     "128.0.0.1", "126.255.255.255", ("10.0.0.1", 40000), ("192.168.1.1", 9090, 0, 0), ("2001:db8::1", 1, 0, 0)],
    ids=str,
)
def test_other_addresses_are_not_loopback(address):
    assert is_loopback(address) is False


@pytest.mark.parametrize(
    "address",
    ["", "localhost", "garbage", "127.0.0.1.evil.example", "127.0.0.1 ", " 127.0.0.1", "127.0.0.1/8", "127.1",
     "0x7f.0.0.1", "::1::1", "127.0.0.1:9090", "\x00127.0.0.1", None, 2130706433, ("garbage", 1), ("", 0)],
    ids=repr,
)
def test_garbage_is_not_loopback_and_does_not_raise(address):
    assert is_loopback(address) is False
