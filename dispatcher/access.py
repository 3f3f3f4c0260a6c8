"""Who may do what: the peer checks, in one place."""

from __future__ import annotations

import hmac
import ipaddress


def is_loopback(address) -> bool:
    """True if ``address`` (a host string or a socket peer tuple) is a loopback address."""
    host = address[0] if isinstance(address, tuple) else address
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except (ValueError, AttributeError):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def parse_networks(text: str | None):
    """``"10.0.0.0/8,127.0.0.1"`` -> list of networks; None or empty: everyone."""
    if not text:
        return None
    return [ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()]


def is_allowed(address, networks) -> bool:
    if networks is None:
        return True
    host = address[0] if isinstance(address, tuple) else address
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def token_matches(given: str, expected: str | None) -> bool:
    """Constant-time comparison; with no token configured, anything matches."""
    if not expected:
        return True
    return hmac.compare_digest(given.encode(), expected.encode())
