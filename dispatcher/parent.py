"""The parent server: accept, greet, fork one child per client, reap, stop.

Single-threaded: one ``selectors`` wait over the listener, the signal wakeup
pipe and the connections still in their handshake. Signal handlers do nothing
but wake that wait (``signal.set_wakeup_fd``); the loop then acts on the signal
numbers read from the pipe. The parent reads only the small hello frame of each
connection itself (bounded, with a deadline), so it can answer SERVER_BUSY, a
refused token or a wrong protocol version without forking, and handle
``ddscomm -s`` even when full. With TLS, the parent also does each TLS
handshake, non-blocking, inside the same wait; the child inherits the TLS
session through the fork. Knows nothing of ROOT. See docs/SECURITY.md.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass

from . import __version__, access
from .protocol import (
    PROTOCOL_VERSION,
    Connection,
    Error,
    Hello,
    MessageType,
    Ok,
    ProtocolError,
    Stop,
    Welcome,
)

log = logging.getLogger("dds.parent")

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CHILD_CRASH = 70  # a child's session raised something unexpected

MAX_PENDING = 128  # connections in handshake at once; beyond, the oldest is dropped for the newcomer
TLS_HANDSHAKE_RECORD = 0x16  # first byte of every TLS ClientHello
GRACEFUL_SECONDS = 3.0
FAST_SECONDS = 1.0


@dataclass
class ServerConfig:
    data_dir: str
    port: int = 9090
    bind: str = "0.0.0.0"
    max_clients: int = 10
    handshake_timeout: float = 5.0
    idle_timeout: float = 3600.0  # a client silent this long between requests is dropped
    stall_timeout: float = 60.0  # a client not reading its data this long is dropped
    poll_interval: float = 0.01
    allow: list | None = None  # networks; None: everyone
    token: str | None = None  # shared secret every hello must carry; None: none needed
    tls_cert: str | None = None  # PEM certificate chain: serve TLS only
    tls_key: str | None = None  # PEM private key, if not in tls_cert


class _Pending:
    __slots__ = ("sock", "peer", "conn", "deadline", "admin", "handshaking")

    def __init__(self, sock, peer, deadline, handshaking=False):
        self.sock = sock
        self.peer = peer
        self.conn = Connection("server")
        self.deadline = deadline
        self.admin = False
        self.handshaking = handshaking  # TLS: "new" (nothing read yet), "tls" (under way) or False (done)


def _peer_text(peer) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def describe_status(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


class ParentServer:
    """The ``ddsparentserver`` process.

    Args:
        config (ServerConfig): what to serve and how.
    """

    def __init__(self, config: ServerConfig):
        self.config = config
        self.children: dict[int, str] = {}
        self.pending: dict[socket.socket, _Pending] = {}
        self.listener: socket.socket | None = None
        self.sel = selectors.DefaultSelector()
        self._wake_r = self._wake_w = -1
        self._stop: str | None = None  # None, "graceful" or "fast"
        self.identity = f"ddsparentserver/{__version__} {socket.gethostname()} pid {os.getpid()}"
        # Load the certificate now: a bad one is a start-up error, not a per-client one.
        self.tls = access.server_tls_context(config.tls_cert, config.tls_key) if config.tls_cert else None

    # ------------------------------------------------------------------ setup

    def bind(self) -> tuple[str, int]:
        family = socket.AF_INET6 if ":" in self.config.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.bind, self.config.port))
        sock.listen(128)
        sock.setblocking(False)
        self.listener = sock
        self.sel.register(sock, selectors.EVENT_READ, "listen")
        return sock.getsockname()[:2]

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, _record_only)
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")

    # ------------------------------------------------------------------ main loop

    def serve(self) -> int:
        if self.listener is None:
            self.bind()
        self._install_signals()
        host, port = self.listener.getsockname()[:2]
        level = max(logging.INFO, logging.getLogger("dds").getEffectiveLevel())
        log.log(level, "listening on %s:%d (data directory %s, at most %d clients)", host, port,
                self.config.data_dir, self.config.max_clients)
        log.log(level, "access: %s; %s; %s",
                "clients from " + ",".join(map(str, self.config.allow)) if self.config.allow else "clients from anywhere",
                "token required" if self.config.token else "no token",
                "TLS" if self.tls else "no TLS (plain TCP)")
        while self._stop is None:
            timeout = 1.0
            if self.pending:
                timeout = max(0.0, min(timeout, min(p.deadline for p in self.pending.values()) - time.monotonic()))
            for key, _ in self.sel.select(timeout):
                if key.data == "wake":
                    self._handle_signals()
                elif key.data == "listen":
                    self._accept()
                else:
                    self._handle_pending(key.data)
                if self._stop:
                    break
            self._expire_pending()
            self._reap()
        self._shutdown()
        return EXIT_OK

    def _handle_signals(self) -> None:
        try:
            data = os.read(self._wake_r, 512)
        except BlockingIOError:
            return
        for signum in data:
            if signum == signal.SIGTERM:
                log.info("SIGTERM received: stopping")
                self._stop = "graceful"
            elif signum == signal.SIGINT:
                log.info("SIGINT received: stopping fast")
                self._stop = "fast"
            elif signum == signal.SIGHUP:
                log.info("SIGHUP received: ignored (nothing to reload)")
        self._reap()

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            peer = self.children.pop(pid, "?")
            code = os.waitstatus_to_exitcode(status)
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(level, "child %d (client %s) %s", pid, peer, describe_status(status))

    # ------------------------------------------------------------------ connections

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, keep serving the others
                log.error("accept failed: %s", exc)
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    time.sleep(0.01)
                return
            self._greet(sock, peer)

    def _greet(self, sock: socket.socket, peer) -> None:
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # reset between accept and here
            sock.close()
            return
        if not access.is_allowed(peer, self.config.allow):
            log.warning("refused connection from %s: not in the allowed networks", _peer_text(peer))
            self._refuse(sock, Connection("server"), MessageType.FORBIDDEN, "your address is not allowed")
            return
        if len(self.pending) >= MAX_PENDING:
            # Drop the oldest handshake, not the newcomer: half-open connections
            # (slowloris) then cannot lock real clients out, they only age out faster.
            oldest = min(self.pending.values(), key=lambda q: q.deadline)
            log.warning("too many handshakes in progress (%d): dropping the oldest, from %s",
                        len(self.pending), _peer_text(oldest.peer))
            self._drop_pending(oldest)
            oldest.sock.close()
        if self.tls is not None:
            try:
                sock = access.TLSStream(self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False))
            except OSError as exc:
                log.info("connection from %s failed before the TLS handshake: %s", _peer_text(peer), exc)
                sock.close()
                return
        p = _Pending(sock, peer, time.monotonic() + self.config.handshake_timeout, handshaking="new" if self.tls is not None else False)
        self.pending[sock] = p
        self.sel.register(sock, selectors.EVENT_READ, p)
        log.debug("connection from %s", _peer_text(peer))

    def _drop_pending(self, p: _Pending) -> None:
        self.pending.pop(p.sock, None)
        try:
            self.sel.unregister(p.sock)
        except (KeyError, ValueError):
            pass

    def _close(self, sock) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()

    def _refuse(self, sock, conn: Connection, mtype: MessageType, text: str) -> None:
        try:
            sock.send(b"".join(conn.send(Error(mtype.value, text))))
        except (OSError, ProtocolError):
            pass
        self._close(sock)

    def _expire_pending(self) -> None:
        now = time.monotonic()
        for p in [p for p in self.pending.values() if p.deadline <= now]:
            log.warning("client %s did not complete the handshake in %.1f s; closing",
                        _peer_text(p.peer), self.config.handshake_timeout)
            self._drop_pending(p)
            self._refuse(p.sock, p.conn, MessageType.PROTOCOL_ERROR, "handshake timeout")

    def _tls_handshake(self, p: _Pending) -> bool:
        """Advance the TLS handshake without blocking. True once it is done."""
        import ssl

        if p.handshaking == "new":
            try:
                first = p.sock.recv(1, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                first = b""
            if not first:  # connected and left (a port probe): nothing to report
                self._drop_pending(p)
                p.sock.close()
                return False
            if first[0] != TLS_HANDSHAKE_RECORD:
                self._not_tls(p)
                return False
            p.handshaking = "tls"
        try:
            p.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.sel.modify(p.sock, selectors.EVENT_READ, p)
            return False
        except ssl.SSLWantWriteError:
            self.sel.modify(p.sock, selectors.EVENT_WRITE, p)
            return False
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: not TLS, bad version, unknown CA...
            log.warning("TLS handshake with %s failed: %s", _peer_text(p.peer), exc)
            self._drop_pending(p)
            p.sock.close()
            return False
        p.handshaking = False
        self.sel.modify(p.sock, selectors.EVENT_READ, p)
        log.debug("TLS with %s: %s %s", _peer_text(p.peer), p.sock.version(), (p.sock.cipher() or ("?",))[0])
        return True

    def _not_tls(self, p: _Pending) -> None:
        """A plain DDS client (or anything else) talking to a TLS server: say so in plain text."""
        log.warning("client %s did not start a TLS handshake (this server speaks TLS only); closing",
                    _peer_text(p.peer))
        self._drop_pending(p)
        try:
            p.sock.send_plain(b"".join(Connection("server").send(
                Error(MessageType.PROTOCOL_ERROR.value, "this server speaks TLS only; connect with TLS"))))
        except OSError:
            pass
        p.sock.close()

    def _handle_pending(self, p: _Pending) -> None:
        if p.handshaking and not self._tls_handshake(p):
            return
        try:
            data = p.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.info("connection from %s failed during handshake: %s", _peer_text(p.peer), exc)
            self._drop_pending(p)
            p.sock.close()
            return
        if not data:
            self._drop_pending(p)
            p.sock.close()
            return
        try:
            p.conn.receive_data(data)
            while True:
                msg = p.conn.next_message()
                if msg is None:
                    return
                if isinstance(msg, Hello):
                    if self._on_hello(p, msg):
                        return
                elif isinstance(msg, Stop) and p.admin:
                    self._on_stop(p)
                    return
                else:
                    raise ProtocolError(f"unexpected {msg.TYPE!r} before the session started")
        except ProtocolError as exc:
            log.warning("protocol error from %s: %s", _peer_text(p.peer), exc)
            self._drop_pending(p)
            self._refuse(p.sock, Connection("server"), MessageType.PROTOCOL_ERROR, str(exc))
        except Exception:  # never let one connection take the parent down
            log.exception("unexpected error handling %s", _peer_text(p.peer))
            self._drop_pending(p)
            p.sock.close()

    def _on_hello(self, p: _Pending, hello: Hello) -> bool:
        """Answer a hello. True when the connection left the parent's hands."""
        peer = _peer_text(p.peer)
        if hello.protocol != PROTOCOL_VERSION:
            log.warning("client %s speaks protocol %s; this server speaks %d", peer, hello.protocol, PROTOCOL_VERSION)
            self._drop_pending(p)
            self._refuse(p.sock, p.conn, MessageType.PROTOCOL_ERROR,
                         f"protocol version {hello.protocol} not supported; this server speaks {PROTOCOL_VERSION}")
            return True
        if self.config.token and not access.token_matches(hello.token, self.config.token):
            log.warning("client %s gave a wrong token", peer)
            self._drop_pending(p)
            self._refuse(p.sock, p.conn, MessageType.FORBIDDEN, "wrong or missing token")
            return True
        if hello.role == "admin":
            p.admin = True
            self._send(p, Welcome(PROTOCOL_VERSION, self.identity, os.getpid()))
            return False
        if len(self.children) >= self.config.max_clients:
            log.warning("client %s refused: server busy (%d clients)", peer, len(self.children))
            self._drop_pending(p)
            self._refuse(p.sock, p.conn, MessageType.SERVER_BUSY,
                         f"server has its maximum of {self.config.max_clients} clients; try again later")
            return True
        self._drop_pending(p)
        self._fork(p)
        return True

    def _send(self, p: _Pending, msg) -> None:
        p.sock.setblocking(True)
        p.sock.settimeout(1.0)
        try:
            p.sock.sendall(b"".join(p.conn.send(msg)))
        finally:
            p.sock.setblocking(False)

    def _on_stop(self, p: _Pending) -> None:
        peer = _peer_text(p.peer)
        self._drop_pending(p)
        # Only loopback may stop the server, or a peer that proved the admin token
        # (with a token configured, every hello that got this far carried it).
        if access.is_loopback(p.peer) or self.config.token:
            log.info("shutdown requested by %s%s", peer, "" if access.is_loopback(p.peer) else " (admin token)")
            try:
                self._send(p, Ok({"server": self.identity}))
            except OSError:
                pass
            self._close(p.sock)
            self._stop = "graceful"
        else:
            log.warning("shutdown request from %s refused: not a loopback peer and no admin token configured", peer)
            self._refuse(p.sock, p.conn, MessageType.FORBIDDEN, "shutdown is only allowed from the server's own host")

    def _fork(self, p: _Pending) -> None:
        peer = _peer_text(p.peer)
        try:
            pid = os.fork()
        except OSError as exc:
            log.error("cannot fork for %s: %s", peer, exc)
            self._refuse(p.sock, p.conn, MessageType.SERVER_ERROR, "server cannot start a session now")
            return
        if pid == 0:  # child: never returns to the accept loop
            code = EXIT_CHILD_CRASH
            try:
                self._become_child()
                from .child import run_child

                code = run_child(p.sock, p.conn, p.peer, self.config, self.identity)
            except BaseException:
                try:
                    logging.getLogger("dds.child").exception("child crashed")
                except BaseException:
                    pass
            finally:
                os._exit(code)
        p.sock.close()
        self.children[pid] = peer
        log.info("client %s connected: child %d (%d of %d)", peer, pid, len(self.children), self.config.max_clients)

    def _become_child(self) -> None:
        """Start clean: no listener, no siblings' sockets, default signal handling."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
        self.sel.close()
        self.listener.close()
        for s in self.pending:
            s.close()
        self.pending.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.children.clear()

    # ------------------------------------------------------------------ stop

    def _shutdown(self) -> None:
        fast = self._stop == "fast"
        try:
            self.sel.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        self.listener.close()
        for p in list(self.pending.values()):
            self._drop_pending(p)
            self._refuse(p.sock, p.conn, MessageType.SHUTDOWN, "server is shutting down")
        for pid in list(self.children):
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + (FAST_SECONDS if fast else GRACEFUL_SECONDS)
        while self.children and time.monotonic() < deadline:
            self._reap()
            if self.children:
                self.sel.select(0.02)
                try:
                    os.read(self._wake_r, 512)
                except BlockingIOError:
                    pass
        for pid in list(self.children):
            log.warning("child %d did not stop in time; killing it", pid)
            _kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            try:
                _, status = os.waitpid(pid, 0)
                log.info("child %d (client %s) %s", pid, self.children.pop(pid), describe_status(status))
            except ChildProcessError:
                self.children.pop(pid, None)
        log.info("stopped")


def _record_only(signum, frame):  # the wakeup fd carries the signal number to the loop
    pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
