"""The parent server: accept, fork one child per client, reap, stop.

Single-threaded, shaped like gunicorn's arbiter: one ``selectors`` wait over
the listener, the signal wakeup pipe and the connections still in the doorway
(:mod:`dispatcher.doorway`: TLS, hello, access checks and admin stop, all
before any fork). Signal handlers only record the signal (the wakeup pipe
carries its number); the loop reads the numbers and calls the flat
``handle_<signal>`` methods. Stopping is a phase of the same loop:

- SIGTERM or ``ddscomm -s``: graceful. Close the listener, SIGTERM the children
  (each tells its client SHUTDOWN), reap them for ``GRACEFUL_SECONDS``, then
  SIGKILL the rest.
- SIGINT: fast. The same with ``FAST_SECONDS``.
- SIGINT while stopping: escalate at once, SIGKILL every remaining child.

How each child ended is logged with its cause (:func:`describe_status`); no
exit status or signal number can make the parent raise. Knows nothing of ROOT.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import __version__, access, compression
from .basketcache import BUDGET_MB, Cache
from .doorway import REFUSAL_CAUSES, Admit, Doorway, Pending, StopAsked, Verdict, peer_text, unregister
from .grouplink import Desk, Line
from .grouplink import channel as group_channel
from .groups import LINGER_SECONDS, Ledger
from .protocol import MessageType
from .status import Board, Row, channel

log = logging.getLogger("dds.parent")

#: exit statuses of the parent (``ddsparentserver``)
EXIT_OK = 0  # stopped as asked: SIGTERM, SIGINT or ddscomm -s
EXIT_USAGE = 2  # bad command line or data directory
EXIT_PARENT_CRASH = 70  # a bug in the parent's own loop; its children were told to stop
#: exit status of a child whose session raised something unexpected
EXIT_CHILD_CRASH = 70

#: seconds the children have to end their sessions in a graceful stop (SIGTERM, ddscomm -s)
GRACEFUL_SECONDS = 3.0
#: ... in a fast stop (SIGINT)
FAST_SECONDS = 1.0
#: seconds to wait for SIGKILLed children to be reaped before giving up on them
KILL_REAP_SECONDS = 2.0
#: longest single wait of the loop
LOOP_SECONDS = 1.0
#: most connections taken per wake-up of the listener, so the others get their turn
ACCEPT_BATCH = 64
#: seconds between looks at the data directory for the files-seen metric
FILES_SECONDS = 1.0

_WAKE = "wake"
_LISTEN = "listen"


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
    compression: tuple[str, ...] | None = None  # codecs clients may ask for; None: every one installed
    metrics_port: int | None = None  # serve Prometheus metrics on this port; None: off
    metrics_bind: str = "127.0.0.1"
    status_reports: bool = True  # children report to the parent (off only to measure what that costs)
    group_linger: float = LINGER_SECONDS  # seconds a group without members keeps its place
    group_state: str | None = None  # file the groups are kept in across restarts; None: memory only
    basket_cache_mb: int = BUDGET_MB  # decompressed baskets shared by the children (basketcache); 0: off


class Phase(enum.Enum):
    """Where the parent is in its life."""

    SERVING = "serving"
    STOPPING = "stopping"  # children asked to end (SIGTERM); waiting for them until the deadline
    KILLING = "killing"  # children SIGKILLed; waiting to reap them
    DONE = "done"


class StopKind(enum.Enum):
    """How fast a stop goes: the seconds the children get before SIGKILL."""

    GRACEFUL = GRACEFUL_SECONDS
    FAST = FAST_SECONDS


# --------------------------------------------------------------------------- how a child ended

#: why a process usually dies of a signal, by signal name
SIGNAL_CAUSES = {
    "SIGKILL": "out of memory?",
    "SIGSEGV": "crash",
    "SIGBUS": "crash: bad memory access",
    "SIGILL": "crash: illegal instruction",
    "SIGFPE": "crash: arithmetic error",
    "SIGABRT": "aborted",
    "SIGTERM": "asked to stop",
    "SIGINT": "interrupted",
    "SIGQUIT": "quit",
    "SIGHUP": "hang-up",
    "SIGPIPE": "wrote to a closed connection",
    "SIGXCPU": "CPU time limit",
    "SIGXFSZ": "file size limit",
}

#: what a child's exit status means, where it means something
EXIT_CAUSES = {
    EXIT_CHILD_CRASH: "its session raised an unexpected error",
}


def exit_cause(status: int) -> str:
    """A short cause for a child that did not exit 0: ``killed by SIGKILL``, ``exit 70``."""
    try:
        code = os.waitstatus_to_exitcode(status)
    except ValueError:
        return "unknown"
    return f"killed by {signal_name(-code)}" if code < 0 else f"exit {code}"


def signal_name(signum: int) -> str:
    """The name of any signal number, also the real-time ones ``signal.Signals`` cannot name.

    Args:
        signum (int): a signal number.
    """
    try:
        return signal.Signals(signum).name
    except ValueError:
        pass
    low, high = getattr(signal, "SIGRTMIN", None), getattr(signal, "SIGRTMAX", None)
    if low is not None and high is not None and low < signum <= high:
        return f"SIGRTMIN+{signum - low}"
    return f"signal {signum}"


def describe_signal(signum: int, cause: str | None = None) -> str:
    """``SIGSEGV (crash)``, ``SIGRTMIN+6 (signal 40)``: a signal and why it usually comes.

    Args:
        signum (int): a signal number.
        cause (str or None): the cause when it is known; None: the usual one for that signal.
    """
    name = signal_name(signum)
    cause = cause or SIGNAL_CAUSES.get(name)
    if cause is None and not name.startswith("signal "):
        cause = f"signal {signum}"
    return f"{name} ({cause})" if cause else name


def describe_status(status: int, signal_cause: str | None = None) -> str:
    """How a process ended, from its ``os.waitpid`` status, in words. Never raises.

    Args:
        status (int): the status ``os.waitpid`` returned.
        signal_cause (str or None): why it got its signal, when the parent knows (it sent it);
            None: the usual cause of that signal.
    """
    try:
        code = os.waitstatus_to_exitcode(status)
    except ValueError:  # stopped or continued: reported only to waitpid flags the parent never uses
        return f"changed state (wait status {status:#x})"
    if code < 0:
        return f"killed by {describe_signal(-code, signal_cause)}"
    cause = EXIT_CAUSES.get(code)
    return f"exited with status {code}" + (f" ({cause})" if cause else "")


# --------------------------------------------------------------------------- the parent


class ParentServer:
    """The ``ddsparentserver`` process.

    Args:
        config (ServerConfig): what to serve and how.
    """

    def __init__(self, config: ServerConfig):
        self.config = config
        self.children: dict[int, str] = {}  # pid -> the client it serves
        self.listener: socket.socket | None = None
        self.sel = selectors.DefaultSelector()
        self.phase = Phase.SERVING
        self.deadline = 0.0  # while stopping: when the current phase gives up waiting
        self._stop_kind: StopKind | None = None
        self._sigkilled: dict[int, str] = {}  # pid -> why the stop had to kill it
        self._wake_r = self._wake_w = -1
        self.identity = f"ddsparentserver/{__version__} {socket.gethostname()} pid {os.getpid()}"
        # Load the certificate now: a bad one is a start-up error, not a per-client one.
        self.tls = access.server_tls_context(config.tls_cert, config.tls_key) if config.tls_cert else None
        self.doorway = Doorway(config, self.sel, self.identity, self.tls, self._client_count, self.status)
        self.board = Board()  # what each child reports over its channel
        self.desk = Desk(Ledger(config.group_linger), config.group_state)  # the groups, fed by the children
        self.cache = Cache(config.basket_cache_mb)  # decompressed baskets the children share
        self._trimmed_at = 0.0
        self.started = time.time()
        self._files_seen: set[str] = set()
        self._files_at = 0.0
        self._catalog: Any = None
        self.metrics: Any = None  # metrics.MetricsServer with --metrics-port
        self._handlers: dict[int, Callable[[], None]] = {
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_int,
            signal.SIGCHLD: self.handle_chld,
            signal.SIGHUP: self.handle_hup,
        }

    # ------------------------------------------------------------------ setup

    def bind(self) -> tuple[str, int]:
        family = socket.AF_INET6 if ":" in self.config.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.bind, self.config.port))
        sock.listen(128)
        sock.setblocking(False)
        self.listener = sock
        self.sel.register(sock, selectors.EVENT_READ, _LISTEN)
        if self.config.metrics_port is not None and self.metrics is None:
            from .metrics import MetricsServer

            self.metrics = MetricsServer(self.config.metrics_bind, self.config.metrics_port, self.sel, self.status)
        return sock.getsockname()[:2]

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # The C-level handler writes each signal's number into the pipe: that is the record.
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in self._handlers:
            signal.signal(sig, _record_only)
        self.sel.register(self._wake_r, selectors.EVENT_READ, _WAKE)

    # ------------------------------------------------------------------ main loop

    def serve(self) -> int:
        """Serve until stopped; the exit status for the process."""
        listener = self.listener if self.listener is not None else self._bind_listener()
        self._install_signals()
        host, port = listener.getsockname()[:2]
        level = max(logging.INFO, logging.getLogger("dds").getEffectiveLevel())
        log.log(level, "listening on %s:%d (data directory %s, at most %d clients)", host, port,
                self.config.data_dir, self.config.max_clients)
        allow = self.config.allow
        log.log(level, "access: %s; %s; %s",
                "clients from " + ",".join(map(str, allow)) if allow else "clients from anywhere",
                "token required" if self.config.token else "no token",
                "TLS" if self.tls else "no TLS (plain TCP)")
        if self.cache.directory is not None:
            log.log(level, "baskets decompressed once for all children in %s (at most %d MB)", self.cache.directory,
                    self.config.basket_cache_mb)
        wanted = self.config.compression or ()
        missing = [c for c in wanted if c not in compression.available(wanted)]
        if missing:  # said now, not only to the first client that asks
            log.warning("compression %s asked for but not installed: clients asking for it are refused",
                        ", ".join(missing))
        if self.metrics is not None:
            log.log(level, "metrics at http://%s:%d/metrics", *self.metrics.address[:2])
        try:
            self._loop(listener)
        except Exception:  # a bug here must not leave clients served by orphans
            log.exception("unexpected error in the parent: ending every session and exiting")
            for pid in list(self.children):
                _kill(pid, signal.SIGTERM)
            self.cache.close()
            return EXIT_PARENT_CRASH
        self._close()
        log.info("stopped")
        return EXIT_OK

    def _loop(self, listener: socket.socket) -> None:
        while self.phase is not Phase.DONE:
            for key, _ in self.sel.select(self._wait_seconds()):
                if key.data == _WAKE:
                    self._dispatch_signals()
                elif isinstance(key.data, Row):
                    self.board.readable(key.data)
                elif isinstance(key.data, Line):
                    self.desk.readable(key.data)
                elif self.metrics is not None and self.metrics.owns(key.data):
                    self.metrics.ready(key.data)
                elif self.phase is not Phase.SERVING:
                    continue  # the stop closed the listener and the doorway under this batch
                elif key.data == _LISTEN:
                    self._accept(listener)
                else:
                    self._act(self.doorway.ready(key.data))
            self._tick(time.monotonic())

    def _bind_listener(self) -> socket.socket:
        self.bind()
        assert self.listener is not None
        return self.listener

    def _wait_seconds(self) -> float:
        now = time.monotonic()
        if self.phase is Phase.SERVING:
            due = self.doorway.next_deadline()
            scrape = self.metrics.next_deadline() if self.metrics is not None else None
            if scrape is not None:
                due = scrape if due is None else min(due, scrape)
        else:
            due = self.deadline
        return LOOP_SECONDS if due is None else max(0.0, min(LOOP_SECONDS, due - now))

    def _tick(self, now: float) -> None:
        """What time alone decides: handshake deadlines, stop deadlines, lingering groups, the cache's size."""
        self.desk.tick()
        if now - self._trimmed_at >= FILES_SECONDS:
            self._trimmed_at = now
            self.cache.trim()
        if self.metrics is not None:
            self.metrics.expire(now)
            if now - self._files_at >= FILES_SECONDS:  # "files seen" for the metrics
                self._files_at = now
                self.status_files()
        if self.phase is Phase.SERVING:
            self.doorway.expire(now)
            return
        self._reap()  # also covers a SIGCHLD whose byte the full pipe could not take
        if not self.children:
            self.phase = Phase.DONE
        elif now >= self.deadline and self.phase is Phase.STOPPING:
            self._kill_all(f"did not stop in {self._stop_seconds:g} s", "stop deadline passed")
        elif now >= self.deadline and self.phase is Phase.KILLING:
            for pid, peer in self.children.items():
                log.error("child %d (client %s) still not reaped %g s after SIGKILL; leaving it",
                          pid, peer, KILL_REAP_SECONDS)
            self.phase = Phase.DONE

    # ------------------------------------------------------------------ signals

    def _dispatch_signals(self) -> None:
        for signum in self._read_signals():
            handler = self._handlers.get(signum)
            if handler is not None:
                handler()

    def _read_signals(self) -> bytes:
        got = b""
        for _ in range(16):  # the pipe holds at most what its buffer took; read it all, boundedly
            try:
                data = os.read(self._wake_r, 512)
            except (BlockingIOError, InterruptedError):
                break
            got += data
            if len(data) < 512:
                break
        return got

    def handle_term(self) -> None:
        """SIGTERM: graceful stop (ignored while already stopping)."""
        if self.phase is Phase.SERVING:
            log.info("SIGTERM received: stopping (children have %g s to end their sessions)", GRACEFUL_SECONDS)
            self._begin_stop(StopKind.GRACEFUL)
        else:
            log.info("SIGTERM received: already stopping (SIGINT stops at once)")

    def handle_int(self) -> None:
        """SIGINT (Ctrl-C): fast stop; a second one, or one during a graceful stop, kills at once."""
        if self.phase is Phase.SERVING:
            log.info("SIGINT received: stopping fast (children have %g s; SIGINT again ends them at once)",
                     FAST_SECONDS)
            self._begin_stop(StopKind.FAST)
        elif self.phase is Phase.STOPPING:
            log.warning("SIGINT received while stopping: killing the remaining children at once (%d)",
                        len(self.children))
            self._kill_all("still running at the second SIGINT", "stop escalated")
        else:
            log.info("SIGINT received: already killing the last children")

    def handle_chld(self) -> None:
        """SIGCHLD: reap every child that ended."""
        self._reap()

    def handle_hup(self) -> None:
        """SIGHUP: nothing to reload."""
        log.info("SIGHUP received: ignored (nothing to reload)")

    # ------------------------------------------------------------------ children

    def _client_count(self) -> int:
        if len(self.children) >= self.config.max_clients:
            self._reap()  # a client that just left frees its place before its SIGCHLD is read
        return len(self.children)

    def _reap(self) -> None:
        for _ in range(len(self.children)):
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                for pid in list(self.children):
                    self._forget_row(pid, "lost")
                self.children.clear()
                return
            if pid == 0:
                return
            self._log_end(pid, status)

    def _log_end(self, pid: int, status: int) -> None:
        peer = self.children.pop(pid, "?")
        self.cache.set_children(len(self.children))
        how = describe_status(status, self._sigkilled.pop(pid, None))
        level = logging.INFO if status == 0 else logging.WARNING
        log.log(level, "child %d (client %s) %s", pid, peer, how)
        self._forget_row(pid, None if status == 0 else exit_cause(status))

    def _forget_row(self, pid: int, failure: str | None) -> None:
        """A child is gone: its status row too (after reading its last report)."""
        row = self.board.rows.get(pid)
        if row is not None:
            unregister(self.sel, row.sock)
        self.board.remove(pid, failure)
        line = self.desk.lines.get(pid)
        if line is not None:
            unregister(self.sel, line.sock)
        self.desk.remove(pid)

    def _act(self, verdict: Verdict) -> None:
        if isinstance(verdict, Admit):
            self._fork(verdict.pending)
        elif isinstance(verdict, StopAsked) and self.phase is Phase.SERVING:
            log.info("stopping (children have %g s to end their sessions)", GRACEFUL_SECONDS)
            self._begin_stop(StopKind.GRACEFUL)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: log, keep serving the others
                log.error("accept failed: %s", exc)
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    time.sleep(0.01)
                return
            self.doorway.enter(sock, peer)

    def _fork(self, p: Pending) -> None:
        peer = peer_text(p.peer)
        mine: socket.socket | None
        theirs: socket.socket | None
        try:
            if not self.config.status_reports:
                raise OSError("status reports are off")
            mine, theirs = channel()
        except OSError as exc:  # out of descriptors: serve the client, without status reports
            if self.config.status_reports:
                log.warning("no status channel for %s: %s", peer, exc)
            mine = theirs = None
        group_mine: socket.socket | None
        group_theirs: socket.socket | None
        try:
            group_mine, group_theirs = group_channel()
        except OSError as exc:  # out of descriptors: serve the client, without groups
            log.warning("no group line for %s: %s", peer, exc)
            group_mine = group_theirs = None
        try:
            pid = os.fork()
        except OSError as exc:
            log.error("cannot fork for %s: %s", peer, exc)
            for end in (mine, theirs, group_mine, group_theirs):
                if end is not None:
                    end.close()
            self.doorway.refuse(p, MessageType.SERVER_ERROR, "server cannot start a session now")
            return
        if pid == 0:  # child: never returns to the accept loop
            code = EXIT_CHILD_CRASH
            try:
                self._become_child()
                for end in (mine, group_mine):
                    if end is not None:
                        end.close()
                from .child import run_child

                code = run_child(p.sock, p.conn, p.peer, self.config, self.identity, p.compression, report=theirs,
                                 groups=group_theirs)
            except BaseException:
                try:
                    logging.getLogger("dds.child").exception("child crashed")
                except BaseException:
                    pass
            finally:
                os._exit(code)
        p.sock.close()
        self.children[pid] = peer
        self.cache.set_children(len(self.children))
        if mine is not None and theirs is not None:
            theirs.close()
            self.sel.register(mine, selectors.EVENT_READ, self.board.add(pid, peer, mine))
        if group_mine is not None and group_theirs is not None:
            group_theirs.close()
            self.sel.register(group_mine, selectors.EVENT_READ, self.desk.add(pid, peer, group_mine))
        log.info("client %s connected: child %d (%d of %d)", peer, pid, len(self.children), self.config.max_clients)

    def _become_child(self) -> None:
        """Start clean: no listener, no siblings' sockets, default signal handling."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
        self.sel.close()
        if self.listener is not None:
            self.listener.close()
        self.doorway.forget_all()
        self.board.close_all()
        self.desk.close_all()
        if self.cache.directory is not None:
            from .basketcache import install

            install(self.cache.directory, self.cache.count)
        if self.metrics is not None:
            self.metrics.close_in_child()
            self.metrics = None
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.children.clear()

    # ------------------------------------------------------------------ status

    def status_files(self) -> list[str]:
        """The data files now (one ``stat`` of the directory while it does not change)."""
        from .catalog import Catalog

        if self._catalog is None:
            self._catalog = Catalog(self.config.data_dir)
        files = self._catalog.files()
        self._files_seen.update(files)
        return files

    def status(self) -> dict:
        """The server and a row per client, as ``ddscomm --status --json`` prints it (docs/STATUS.md)."""
        files = self.status_files()
        refused = dict.fromkeys(REFUSAL_CAUSES, 0)
        refused.update(self.doorway.refused)
        clients = self.board.clients()
        return {
            "server": {
                "identity": self.identity,
                "version": __version__,
                "pid": os.getpid(),
                "started": round(self.started, 3),
                "uptime": round(time.time() - self.started, 3),
                "state": self.phase.value,
                "data_dir": self.config.data_dir,
                "files": len(files),
                "files_seen": len(self._files_seen),
                "open_file": files[-1] if files else None,
                "clients": len(self.children),
                "max_clients": self.config.max_clients,
                "refused": refused,
                "child_exits": dict(self.board.exits),
                "records_sent": self.board.per_stream("records_sent"),
                "record_bytes_sent": self.board.per_stream("record_bytes_sent"),
                "bytes_sent": self.board.bytes_sent(),
            },
            "clients": clients,
            "groups": self.desk.ledger.status(time.monotonic()),
        }

    # ------------------------------------------------------------------ stop

    @property
    def _stop_seconds(self) -> float:
        return self._stop_kind.value if self._stop_kind is not None else 0.0

    def _begin_stop(self, kind: StopKind) -> None:
        """Stop taking clients and ask every child to end its session (each tells its client SHUTDOWN)."""
        if self.phase is not Phase.SERVING:
            return
        self.phase = Phase.STOPPING
        self._stop_kind = kind
        self.deadline = time.monotonic() + kind.value
        if self.listener is not None:
            unregister(self.sel, self.listener)
            self.listener.close()
        self.doorway.refuse_all(MessageType.SHUTDOWN, "server is shutting down")
        for pid in list(self.children):
            _kill(pid, signal.SIGTERM)

    def _kill_all(self, why: str, cause: str) -> None:
        """SIGKILL every child left; the loop reaps them until ``KILL_REAP_SECONDS`` have passed."""
        for pid, peer in self.children.items():
            log.warning("child %d (client %s) %s; killing it", pid, peer, why)
            self._sigkilled[pid] = cause
            _kill(pid, signal.SIGKILL)
        self.phase = Phase.KILLING
        self.deadline = time.monotonic() + KILL_REAP_SECONDS

    def _close(self) -> None:
        signal.set_wakeup_fd(-1)
        if self.metrics is not None:
            self.metrics.close()
        self.board.close_all()
        self.desk.close_all()
        self.desk.save()
        self.cache.close()
        self.sel.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1


def _record_only(signum, frame):  # the wakeup fd already carries the signal number to the loop
    pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
