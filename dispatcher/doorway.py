"""The doorway: everything the parent does to a new connection before it forks.

An accepted connection waits here, non-blocking and with a deadline, while the
doorway checks the peer against the allowed networks, does the TLS handshake
(when the server speaks TLS), reads the small hello frame and checks its
protocol version and token. Then the connection is either refused with an
error frame (FORBIDDEN, PROTOCOL_ERROR, SERVER_BUSY: no fork, so a flood of
bad connections costs no processes), kept as an admin connection
(``ddscomm -s``, served even when the server is full), or handed back to the
parent, which forks a child for it. The child inherits the connection as it
is: the hello already read, the TLS session already set up.

The doorway never waits itself: its connections sit in the parent's one
``selectors`` wait, and the parent calls :meth:`Doorway.ready` when one of
them has something. See docs/SECURITY.md.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import access, compression, logsetup
from .protocol import (
    PROTOCOL_VERSION,
    Connection,
    Error,
    Hello,
    Message,
    MessageType,
    Ok,
    ProtocolError,
    Status,
    Stop,
    Welcome,
    quote,
)

if TYPE_CHECKING:
    from .parent import ServerConfig

log = logging.getLogger("dds.doorway")

#: connections in the doorway at once; beyond, the oldest is dropped for the newcomer
MAX_PENDING = 128
#: first byte of every TLS ClientHello
TLS_HANDSHAKE_RECORD = 0x16
#: seconds an answer to an admin connection may take to go out
ADMIN_SEND_SECONDS = 1.0


class TLSPhase(enum.Enum):
    """How far a connection is with its TLS handshake."""

    NONE = "none"  # plain TCP server, or the handshake is done
    NEW = "new"  # nothing read yet: is it TLS at all?
    SHAKING = "shaking"  # the handshake is under way


class Pending:
    """One connection in the doorway.

    Args:
        sock (socket.socket or access.TLSStream): the accepted connection, non-blocking.
        peer (tuple): its address as ``accept`` gave it.
        deadline (float): ``time.monotonic()`` by which the hello must be complete.
        tls (TLSPhase): where its TLS handshake stands.
    """

    __slots__ = ("sock", "peer", "conn", "deadline", "admin", "tls", "compression")

    def __init__(self, sock: Any, peer: Any, deadline: float, tls: TLSPhase = TLSPhase.NONE):
        self.sock = sock
        self.peer = peer
        self.conn = Connection("server")
        self.deadline = deadline
        self.admin = False  # said hello as an admin: may ask the server to stop
        self.tls = tls
        self.compression = ""  # the codec agreed for record data ("" for none)


@dataclass(frozen=True)
class Admit:
    """A client that passed every check: the parent forks a child for it."""

    pending: Pending


@dataclass(frozen=True)
class StopAsked:
    """An admin asked the server to stop, and was allowed to."""

    peer: str


#: why a connection was refused, as the status and the metrics count them
BUSY = "busy"
FORBIDDEN = "forbidden"
BAD_HELLO = "bad hello"
HANDSHAKE_TIMEOUT = "handshake timeout"
REFUSAL_CAUSES = (BUSY, FORBIDDEN, BAD_HELLO, HANDSHAKE_TIMEOUT)

#: what :meth:`Doorway.ready` decided; None: nothing for the parent to do
Verdict = Admit | StopAsked | None


def peer_text(peer: Any) -> str:
    """``HOST:PORT`` of a socket peer address."""
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def close_after_writing(sock: Any) -> None:
    """Close so that what was written still reaches the peer (a FIN, not a reset)."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()


def unregister(sel: selectors.BaseSelector, sock: Any) -> None:
    """Take ``sock`` out of ``sel`` if it is there."""
    try:
        sel.unregister(sock)
    except (KeyError, ValueError):
        pass


class Doorway:
    """The connections the parent accepted and has not yet forked for or refused.

    Args:
        config (ServerConfig): allowed networks, token, handshake timeout, client limit.
        sel (selectors.BaseSelector): the parent's selector; each connection here is
            registered in it with its :class:`Pending` as data.
        identity (str): the server's name, sent in every welcome.
        tls (ssl.SSLContext or None): the server's TLS context; None: plain TCP.
        clients (callable): the number of clients being served now (for SERVER_BUSY).
        status (callable): the status an admin ``status`` request gets (None: an empty one).
    """

    def __init__(self, config: ServerConfig, sel: selectors.BaseSelector, identity: str, tls: Any,
                 clients: Callable[[], int], status: Callable[[], dict] | None = None):
        self.config = config
        self.sel = sel
        self.identity = identity
        self.tls = tls
        self.clients = clients
        self.status = status or dict
        self.pending: dict[Any, Pending] = {}
        self.refused: collections.Counter[str] = collections.Counter()  # refusals by cause (REFUSAL_CAUSES)

    def __len__(self) -> int:
        return len(self.pending)

    # ------------------------------------------------------------------ arrival

    def enter(self, sock: socket.socket, peer: Any) -> None:
        """Take a connection the parent just accepted."""
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # reset between accept and here
            sock.close()
            return
        if not access.is_allowed(peer, self.config.allow):
            log.warning("refused connection from %s: not in the allowed networks", peer_text(peer))
            self.refused[FORBIDDEN] += 1
            self._refuse(sock, Connection("server"), MessageType.FORBIDDEN, "your address is not allowed")
            return
        if len(self.pending) >= MAX_PENDING:
            # Drop the oldest handshake, not the newcomer: half-open connections
            # (slowloris) then cannot lock real clients out, they only age out faster.
            oldest = min(self.pending.values(), key=lambda q: q.deadline)
            log.warning("too many handshakes in progress (%d): dropping the oldest, from %s",
                        len(self.pending), peer_text(oldest.peer))
            self.refused[HANDSHAKE_TIMEOUT] += 1
            self._forget(oldest)
            self._refuse(oldest.sock, oldest.conn, MessageType.PROTOCOL_ERROR,
                         "handshake not finished: too many connections in their handshake, this one the oldest")
        stream: Any = sock
        phase = TLSPhase.NONE
        if self.tls is not None:
            try:
                stream = access.TLSStream(self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False))
            except OSError as exc:
                log.info("connection from %s failed before the TLS handshake: %s", peer_text(peer), exc)
                sock.close()
                return
            phase = TLSPhase.NEW
        p = Pending(stream, peer, time.monotonic() + self.config.handshake_timeout, phase)
        self.pending[stream] = p
        self.sel.register(stream, selectors.EVENT_READ, p)
        log.debug("connection from %s", peer_text(peer))

    # ------------------------------------------------------------------ deadlines

    def next_deadline(self) -> float | None:
        """The earliest handshake deadline, or None with nobody waiting."""
        return min((p.deadline for p in self.pending.values()), default=None)

    def expire(self, now: float) -> None:
        """Close every connection whose hello did not come in time."""
        for p in [p for p in self.pending.values() if p.deadline <= now]:
            log.warning("client %s did not complete the handshake in %.1f s; closing",
                        peer_text(p.peer), self.config.handshake_timeout)
            self.refused[HANDSHAKE_TIMEOUT] += 1
            self._forget(p)
            self._refuse(p.sock, p.conn, MessageType.PROTOCOL_ERROR, "handshake timeout")

    # ------------------------------------------------------------------ progress

    def ready(self, p: Pending) -> Verdict:
        """Move connection ``p`` on, now that its socket is ready; what the parent must do next."""
        if p.tls is not TLSPhase.NONE and not self._tls_handshake(p):
            return None
        try:
            data = p.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            log.info("connection from %s failed during handshake: %s", peer_text(p.peer), exc)
            self._forget(p)
            p.sock.close()
            return None
        if not data:
            self._forget(p)
            p.sock.close()
            return None
        try:
            p.conn.receive_data(data)
            for _ in range(64):  # a hello, then at most a stop: anything more is refused on the way
                msg = p.conn.next_message()
                if msg is None:
                    return None
                if isinstance(msg, Hello):
                    verdict = self._on_hello(p, msg)
                    if verdict is not None or p.sock not in self.pending:
                        return verdict
                elif isinstance(msg, Stop) and p.admin:
                    return self._on_stop(p)
                elif isinstance(msg, Status) and p.admin:
                    self._on_status(p)
                    return None
                else:
                    raise ProtocolError(f"unexpected {msg.TYPE!r} before the session started")
            raise ProtocolError("too many messages before the session started")
        except ProtocolError as exc:
            log.warning("protocol error from %s: %s", peer_text(p.peer), exc)
            self.refused[BAD_HELLO] += 1
            self._forget(p)
            self._refuse(p.sock, Connection("server"), MessageType.PROTOCOL_ERROR, str(exc))
        except Exception:  # never let one connection take the parent down
            logsetup.bug(log, "unexpected error handling %s", peer_text(p.peer))
            self._forget(p)
            p.sock.close()
        return None

    def _tls_handshake(self, p: Pending) -> bool:
        """Advance the TLS handshake without blocking. True once it is done."""
        import ssl

        if p.tls is TLSPhase.NEW:
            try:
                first = p.sock.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                first = b""
            if not first:  # connected and left (a port probe): nothing to report
                self._forget(p)
                p.sock.close()
                return False
            if first[0] != TLS_HANDSHAKE_RECORD:
                self._not_tls(p)
                return False
            p.tls = TLSPhase.SHAKING
        try:
            p.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.sel.modify(p.sock, selectors.EVENT_READ, p)
            return False
        except ssl.SSLWantWriteError:
            self.sel.modify(p.sock, selectors.EVENT_WRITE, p)
            return False
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: not TLS, bad version, unknown CA...
            log.warning("TLS handshake with %s failed: %s", peer_text(p.peer), exc)
            self.refused[BAD_HELLO] += 1
            self._forget(p)
            p.sock.close()
            return False
        p.tls = TLSPhase.NONE
        self.sel.modify(p.sock, selectors.EVENT_READ, p)
        log.debug("TLS with %s: %s %s", peer_text(p.peer), p.sock.version(), (p.sock.cipher() or ("?",))[0])
        return True

    def _not_tls(self, p: Pending) -> None:
        """A plain DDS client (or anything else) talking to a TLS server: say so in plain text."""
        log.warning("client %s did not start a TLS handshake (this server speaks TLS only); closing",
                    peer_text(p.peer))
        self.refused[BAD_HELLO] += 1
        self._forget(p)
        try:
            p.sock.send_plain(b"".join(Connection("server").send(
                Error(MessageType.PROTOCOL_ERROR, "this server speaks TLS only; connect with TLS"))))
        except OSError:
            pass
        p.sock.close()

    def _on_hello(self, p: Pending, hello: Hello) -> Verdict:
        """Check a hello: refuse it, keep an admin, or admit a client."""
        peer = peer_text(p.peer)
        if hello.protocol != PROTOCOL_VERSION:
            asked = quote(hello.protocol)  # a peer's number may have thousands of digits
            log.warning("client %s speaks protocol %s; this server speaks %d", peer, asked, PROTOCOL_VERSION)
            self.refused[BAD_HELLO] += 1
            self._forget(p)
            self._refuse(p.sock, p.conn, MessageType.PROTOCOL_ERROR,
                         f"protocol version {asked} not supported; this server speaks {PROTOCOL_VERSION}")
            return None
        if self.config.token and not access.token_matches(hello.token, self.config.token):
            log.warning("client %s gave a wrong token", peer)
            self.refused[FORBIDDEN] += 1
            self._forget(p)
            self._refuse(p.sock, p.conn, MessageType.FORBIDDEN, "wrong or missing token")
            return None
        if hello.compression and hello.role != "admin":
            codecs = compression.available(self.config.compression)
            if hello.compression not in codecs:
                log.warning("client %s asked for %s compression, which this server cannot do", peer, hello.compression)
                self._forget(p)
                self._refuse(p.sock, p.conn, MessageType.PROTOCOL_ERROR,
                             f"this server cannot compress with {hello.compression!r}; it can: "
                             f"{', '.join(codecs) or 'no compression'}")
                return None
            p.compression = hello.compression
        if hello.role == "admin":
            p.admin = True
            self._send(p, Welcome(PROTOCOL_VERSION, self.identity, os.getpid()))
            return None
        clients = self.clients()
        if clients >= self.config.max_clients:
            log.warning("client %s refused: server busy (%d clients)", peer, clients)
            self.refused[BUSY] += 1
            self._forget(p)
            self._refuse(p.sock, p.conn, MessageType.SERVER_BUSY,
                         f"server has its maximum of {self.config.max_clients} clients; try again later")
            return None
        self._forget(p)
        return Admit(p)

    def _on_stop(self, p: Pending) -> Verdict:
        peer = peer_text(p.peer)
        self._forget(p)
        # Only loopback may stop the server, or a peer that proved the admin token
        # (with a token configured, every hello that got this far carried it).
        if access.is_loopback(p.peer) or self.config.token:
            log.info("shutdown requested by %s%s", peer, "" if access.is_loopback(p.peer) else " (admin token)")
            try:
                self._send(p, Ok({"server": self.identity}))
            except OSError:
                pass
            close_after_writing(p.sock)
            return StopAsked(peer)
        log.warning("shutdown request from %s refused: not a loopback peer and no admin token configured", peer)
        self.refused[FORBIDDEN] += 1
        self._refuse(p.sock, p.conn, MessageType.FORBIDDEN, "shutdown is only allowed from the server's own host")
        return None

    def _on_status(self, p: Pending) -> None:
        """The status shows client addresses: to loopback peers, or holders of the admin token, only."""
        peer = peer_text(p.peer)
        self._forget(p)
        if access.is_loopback(p.peer) or self.config.token:
            log.debug("status requested by %s", peer)
            try:
                self._send(p, Ok({"status": self.status()}))
            except OSError as exc:
                log.info("status for %s not sent: %s", peer, exc)
            close_after_writing(p.sock)
            return
        log.warning("status request from %s refused: not a loopback peer and no admin token configured", peer)
        self.refused[FORBIDDEN] += 1
        self._refuse(p.sock, p.conn, MessageType.FORBIDDEN, "status is only given to the server's own host "
                     "(or with the admin token)")

    def _send(self, p: Pending, msg: Message) -> None:
        p.sock.setblocking(True)
        p.sock.settimeout(ADMIN_SEND_SECONDS)
        try:
            p.sock.sendall(b"".join(p.conn.send(msg)))
        finally:
            p.sock.setblocking(False)

    # ------------------------------------------------------------------ leaving

    def refuse(self, p: Pending, mtype: MessageType, text: str) -> None:
        """Answer ``p`` (already out of the doorway) with an error and close it."""
        self._refuse(p.sock, p.conn, mtype, text)

    def refuse_all(self, mtype: MessageType, text: str) -> None:
        """Answer every connection still here with an error and close it (the server is stopping)."""
        for p in list(self.pending.values()):
            self._forget(p)
            self._refuse(p.sock, p.conn, mtype, text)

    def forget_all(self) -> None:
        """Close every connection here without a word: in a new child, they belong to its parent."""
        for sock in self.pending:
            sock.close()
        self.pending.clear()

    def _forget(self, p: Pending) -> None:
        self.pending.pop(p.sock, None)
        unregister(self.sel, p.sock)

    @staticmethod
    def _refuse(sock: Any, conn: Connection, mtype: MessageType, text: str) -> None:
        try:
            sock.send(b"".join(conn.send(Error(mtype, text))))
        except (OSError, ProtocolError):
            pass
        close_after_writing(sock)
