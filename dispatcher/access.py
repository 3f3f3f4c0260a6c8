"""Who may connect: allow-list, loopback and token checks.

The checks are pure functions of the peer address or the hello. The TLS layer
lives in ``tlsstream`` (part of the wire layer the client shares); its names are
re-exported here for the server's doorway. See docs/SECURITY.md for what these
protect and what not.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

from .tlsstream import TLSStream, client_tls_context, server_tls_context

__all__ = [
    "MAX_TOKEN",
    "TLSStream",
    "client_tls_context",
    "is_allowed",
    "is_loopback",
    "parse_networks",
    "read_token_file",
    "server_tls_context",
    "token_matches",
]

#: a token file holds one line; anything longer is not a token
MAX_TOKEN = 4096


def _ip(address):
    host = address[0] if isinstance(address, tuple) else address
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except (ValueError, AttributeError, TypeError):
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


def is_loopback(address) -> bool:
    """True if ``address`` (a host string or a socket peer tuple) is a loopback address."""
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def parse_networks(text: str | None):
    """``"10.0.0.0/8,127.0.0.1"`` -> list of networks; None or empty: everyone.

    Raises:
        ValueError: a part is not an address or network (the message names it).
    """
    if not text:
        return None
    nets = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or network (like 10.0.0.0/8 or 127.0.0.1)") from None
    if not nets:
        raise ValueError(f"no address or network in {text!r}")
    return nets


def is_allowed(address, networks) -> bool:
    """True if the peer ``address`` is in one of ``networks`` (None: everyone is)."""
    if networks is None:
        return True
    ip = _ip(address)
    if ip is None:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


def token_matches(given, expected: str | None) -> bool:
    """Constant-time comparison; with no token configured, anything matches."""
    if not expected:
        return True
    if not isinstance(given, str):
        return False
    # surrogatepass: a hostile hello may carry lone surrogates; they must compare unequal, not raise
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def read_token_file(path: str) -> tuple[str, str | None]:
    """The shared secret in ``path`` (its first line, without surrounding blanks), and a warning or None.

    Raises:
        ValueError: the file is empty, too long or not text.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        raw = f.read(MAX_TOKEN + 1)
        mode = os.fstat(f.fileno()).st_mode
    if len(raw) > MAX_TOKEN:
        raise ValueError(f"token file {path} is longer than {MAX_TOKEN} bytes")
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"token file {path} is not UTF-8 text") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError(f"token file {path} holds no token (its first line is empty)")
    warning = None
    if mode & 0o077:
        warning = f"token file {path} is readable by other users (mode {mode & 0o777:o}); chmod 600 it"
    return token, warning
