"""The optional TLS layer: contexts, and a TLS socket that behaves like a plain one.

:class:`TLSStream` gives an ``SSLSocket`` the few socket calls the child loop
and the client use (``recv`` with ``MSG_PEEK``/``MSG_DONTWAIT``, ``sendmsg``),
so the same loops serve plain and TLS connections. ``ssl`` is imported only
when TLS is used: every command start pays for an import. Part of the wire
layer the client SDK shares with the server.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl


def server_tls_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or newer) with the given certificate chain and key."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


def client_tls_context(cafile: str | None = None) -> ssl.SSLContext:
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

    def __init__(self, sock: ssl.SSLSocket):
        self._sock = sock

    def __getattr__(self, name: str) -> Any:
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
