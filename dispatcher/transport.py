"""Moving frames over a blocking socket: the I/O half that protocol.py leaves out."""

from __future__ import annotations

import socket
import time

from .protocol import Connection, Message
from .tlsstream import TLSStream

#: what frames travel over: a connected socket, or one inside TLS
Stream = socket.socket | TLSStream

#: scatter-gather writes: at most this many chunks per sendmsg (IOV_MAX is 1024)
_IOV = 512


def send_chunks(sock: Stream, chunks: list) -> int:
    """Write every chunk (bytes-like) in order, without joining them first; return the bytes written."""
    views = [v for v in (memoryview(c).cast("B") for c in chunks) if v.nbytes]
    total = sum(v.nbytes for v in views)
    i = 0
    while i < len(views):
        sent = sock.sendmsg(views[i : i + _IOV])
        while sent:
            n = views[i].nbytes
            if sent >= n:
                sent -= n
                i += 1
            else:
                views[i] = views[i][sent:]
                sent = 0
    return total


#: frames with at least this many bytes still to come are received in place (recv_into)
RECV_INTO = 1 << 16

#: seconds a request may take to leave (the socket may still carry the last wait's short timeout)
SEND_TIMEOUT = 60.0


def send_message(sock: Stream, conn: Connection, message: Message) -> None:
    sock.settimeout(SEND_TIMEOUT)
    send_chunks(sock, conn.send(message))


def recv_message(sock: Stream, conn: Connection, timeout: float | None) -> Message:
    """Block until one whole message arrived. Raises TimeoutError, ConnectionError, RemoteProtocolError."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        msg = conn.next_message()
        if msg is not None:
            return msg
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the server in time")
            sock.settimeout(left)
        else:
            sock.settimeout(None)
        # in place on a plain socket (TLSStream keeps its own reads: it drains decrypted records)
        view = conn.receive_buffer() if conn.bytes_wanted >= RECV_INTO and isinstance(sock, socket.socket) else None
        try:
            if view is not None:  # a big frame: straight into its own buffer
                n = sock.recv_into(view)
                if not n:
                    raise ConnectionError("connection closed by peer")
                conn.received(n)
                continue
            data = sock.recv(min(max(conn.bytes_wanted, 1 << 16), 1 << 24))
        except TimeoutError:  # socket.timeout
            raise TimeoutError("no answer from the server in time") from None
        if not data:
            raise ConnectionError("connection closed by peer")
        conn.receive_data(data)
