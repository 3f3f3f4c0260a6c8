"""Who may connect and over what: allow-list, loopback and token checks, and the optional TLS layer.

The checks are pure functions of the peer address or the hello. The TLS part
builds the contexts (``ssl`` is imported only when TLS is used: every command
start pays for an import) and :class:`TLSStream`, which gives an ``SSLSocket``
the few socket calls the child loop and the client use (``recv`` with
``MSG_PEEK``/``MSG_DONTWAIT``, ``sendmsg``), so the same loops serve plain and
TLS connections. See docs/SECURITY.md for what these protect and what not.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket

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


# --------------------------------------------------------------------------- TLS


def server_tls_context(certfile: str, keyfile: str | None = None):
    """A server-side TLS context (TLS 1.2 or newer) with the given certificate chain and key."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def client_tls_context(cafile: str | None = None):
    """A client-side TLS context that verifies the server (against ``cafile``, else the system CAs)."""
    import ssl

    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


#: largest plaintext read asked of the TLS layer at once (it returns one record, at most 16 KiB, anyway)
_TLS_READ = 1 << 18
#: chunks smaller than this in total are written as one TLS write
_TLS_JOIN = 1 << 16


class TLSStream:
    """An ``SSLSocket`` with the plain-socket calls DDS uses.

    ``recv(n, MSG_DONTWAIT)`` raises ``BlockingIOError`` like a plain socket
    when no whole TLS record is there; a TLS close or a cut TLS stream reads as
    end of file. ``recv(n, MSG_PEEK)`` looks at the encrypted bytes of the TCP
    stream: it tells whether the peer sent something or closed, not what.
    Every read drains what the TLS layer already decrypted, so a selector on
    the descriptor never misses buffered plaintext. ``sendmsg`` writes the
    chunks in order and returns their total. Everything else is the SSLSocket's.

    Args:
        sock (ssl.SSLSocket): a connected TLS socket (the handshake may still be due).
    """

    def __init__(self, sock):
        self._sock = sock

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, n: int, flags: int = 0) -> bytes:
        import ssl

        n = max(1, min(n, _TLS_READ))
        if flags & socket.MSG_PEEK:
            if self._sock.pending():
                return b"\x00"  # plaintext is waiting; what it is does not matter to a peek
            return socket.socket.recv(self._sock, n, flags)
        nonblocking = bool(flags & socket.MSG_DONTWAIT)
        if nonblocking:
            saved = self._sock.gettimeout()
            self._sock.settimeout(0.0)
        try:
            data = self._sock.recv(n)
            while data and len(data) < n and self._sock.pending():
                data += self._sock.recv(min(n - len(data), self._sock.pending()))
            return data
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise BlockingIOError("no complete TLS record yet") from None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""
        finally:
            if nonblocking:
                self._sock.settimeout(saved)

    def sendmsg(self, buffers, *args) -> int:
        views = [memoryview(b).cast("B") for b in buffers]
        total = sum(v.nbytes for v in views)
        if total <= _TLS_JOIN:
            self._sock.sendall(b"".join(views))
        else:
            for v in views:
                self._sock.sendall(v)
        return total

    def send(self, data, flags: int = 0) -> int:
        return self._sock.send(data)

    def send_plain(self, data) -> int:
        """Write bytes outside TLS: only to answer a peer that does not speak TLS at all."""
        return socket.socket.send(self._sock, data)

    def sendall(self, data, flags: int = 0) -> None:
        self._sock.sendall(data)

    def shutdown(self, how: int) -> None:
        try:
            self._sock.shutdown(how)
        except ValueError:  # the SSL object is already gone
            pass

    def close(self) -> None:
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
