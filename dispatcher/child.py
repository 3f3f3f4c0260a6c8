"""A forked child serving one client: the connection loop around a Session.

The child owns one socket. Between requests it waits for the next one (an idle
limit drops clients that went silent); during a request the session's waits
watch the socket (a vanished client ends the child at once), the SIGTERM
wakeup pipe (the parent's stop: tell the client SHUTDOWN) and the parent's pid
(an orphan never serves on). Every reply is sent with a stall limit, so a client
that stops reading blocks only its own child, and only for that long.
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from . import logsetup
from .columnar import encode_parts
from .compression import compress_data
from .grouplink import ChildLink
from .protocol import (
    CLIENT_MAX_HEADER,
    PREFIX,
    PROTOCOL_VERSION,
    Connection,
    Credit,
    Data,
    EndStream,
    Error,
    GoToFile,
    GoToNextFile,
    InvalidRequest,
    Leave,
    Message,
    MessageType,
    Next,
    NextBatch,
    Ok,
    ProtocolError,
    RemoteProtocolError,
    Rewind,
    Status,
    Stop,
    StreamBatches,
    Subscribe,
    Welcome,
    quote,
)
from .remote import make_catalog
from .session import Session, SessionAbort, SessionError
from .status import IDLE, READING, SENDING, WAITING, Reporter
from .streaming import BatchStream, ClientSpoke, after_stream, serve_stream
from .subscription import SubscriptionError, from_dict
from .transport import send_chunks

log = logging.getLogger("dds.child")

EXIT_OK = 0
PR_SET_PDEATHSIG = 1
#: bytes a client may send while its request is served: one whole request, read after the reply
SEND_AHEAD = PREFIX.size + CLIENT_MAX_HEADER


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the parent dies (the pid check covers other systems)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _set_title(text: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(text)


def _keepalive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)


class Watch:
    """Waits that keep an eye on the client, the parent and SIGTERM."""

    def __init__(self, sock, conn, parent_pid: int, idle_timeout: float):
        self.sock = sock
        self.conn = conn
        self.parent_pid = parent_pid
        self.idle_timeout = idle_timeout
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_term)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.sel.register(sock, selectors.EVENT_READ, "sock")
        self.sending = False  # a reply is being written
        self.reporter: Reporter | None = None  # told when the session waits for data
        self.interrupt = False  # a stream of batches: a client message ends a wait at once

    def interruptible(self, on: bool) -> None:
        """While on, a wait that sees the client send something raises ClientSpoke."""
        self.interrupt = on

    def _check(self) -> None:
        try:
            if os.read(self.wake_r, 64):
                raise SessionAbort("shutdown")
        except BlockingIOError:
            pass
        if os.getppid() != self.parent_pid:
            raise SessionAbort("parent gone")

    def _on_term(self, signum, frame) -> None:
        # The wakeup fd records the signal for the loop. But a reply blocked on a client that
        # stopped reading would keep an orphan serving until the stall limit: when the parent is
        # gone (the parent-death signal), the send is abandoned at once.
        if self.sending and os.getppid() != self.parent_pid:
            raise SessionAbort("parent gone")

    def _receive(self) -> None:
        """Take what the client sent (nothing if nothing is there); notice at once when it closed
        (EOF, or a TLS close_notify)."""
        try:
            data = self.sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            raise SessionAbort("client gone")
        self.conn.receive_data(data)

    def _receive_ahead(self) -> None:
        """The client sent bytes during a request: keep them for after the reply (one request at most)."""
        self._receive()
        if self.conn.buffered > SEND_AHEAD:
            raise RemoteProtocolError("client sent more than one request while a request was being served")

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds`` during a request."""
        if self.reporter is not None:
            self.reporter.set_state(WAITING)
            self.reporter.tick()
        for key, _ in self.sel.select(seconds):
            if key.data == "sock":
                if self.interrupt:  # a stream's credit or end_stream: taken in by the stream (poll)
                    self._receive()
                    raise ClientSpoke()
                self._receive_ahead()
        self._check()

    def poll(self) -> Message | None:
        """The client's next message if it has arrived, else None; never blocks."""
        msg = self.conn.next_message()
        if msg is not None:
            return msg
        self._check()
        self._receive()
        return self.conn.next_message()

    def next_request(self, idle_work=None, idle_tick=None):
        """Block for the client's next message.

        While none has arrived, ``idle_work()`` is called (one bounded step at a time,
        until it returns False), so the session reads ahead while the client is busy
        with the last reply; then ``idle_tick(seconds waited)`` at least once a second.
        """
        start = time.monotonic()
        deadline = start + self.idle_timeout
        while True:
            msg = self.conn.next_message()
            if msg is not None:
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise SessionAbort("idle")
            events = self.sel.select(0)
            if not events and idle_work is not None and idle_work():
                continue
            idle_work = None
            if idle_tick is not None:
                idle_tick(time.monotonic() - start)
            pause = min(1.0, left)
            if self.reporter is not None:
                self.reporter.tick()  # a snapshot held back by the rate limit goes out now, or when due
                pause = min(pause, self.reporter.due_in())
            for key, _ in events or self.sel.select(pause):
                if key.data == "sock":
                    self._receive()
            self._check()


def _subscribe(session: Session, msg: Subscribe) -> Message:
    try:
        sub = from_dict(msg.subscription)
    except SubscriptionError as exc:
        return Error(MessageType.BAD_SUBSCRIPTION, str(exc))
    return Ok(session.subscribe(sub))


def _next(session: Session, msg: Next) -> Message:
    parts, layout = session.next(msg.timeout, msg.advance_by, msg.prefetch)
    return encode_parts(parts, layout)


def _rewind(session: Session, msg: Rewind) -> Message:
    return Ok(session.rewind(msg.file, msg.consumed))


def _leave(session: Session, msg: Leave) -> Message:
    return Ok(session.leave(msg.file, msg.consumed))


def _next_batch(session: Session, msg: NextBatch) -> Message:
    parts, layout = session.next_batch(msg.max_records, msg.timeout)
    return encode_parts(parts, layout)


def _go_to_file(session: Session, msg: GoToFile) -> Message:
    return Ok(session.go_to_file(msg.name))


def _go_to_next_file(session: Session, msg: GoToNextFile) -> Message:
    return Ok(session.go_to_next_file(msg.timeout))


def _stop(session: Session, msg: Stop) -> Message:
    return Error(MessageType.FORBIDDEN, "stop the server with an admin connection (ddscomm -s)")


def _status(session: Session, msg: Status) -> Message:
    return Error(MessageType.FORBIDDEN, "ask the server's status with an admin connection (ddscomm --status)")


def _stream_control(session: Session, msg: Message) -> Message:
    # run_child hands these to the stream of batches (serve_stream, after_stream); never here
    return Error(MessageType.PROTOCOL_ERROR, f"{msg.TYPE!r} outside a stream of batches")


def _invalid(session: Session, msg: InvalidRequest) -> Message:
    # a value out of range costs one answer, like any other refused request
    return Error(MessageType.BAD_SUBSCRIPTION, msg.reason)


#: the reply to each request, by its type (the messages were checked when they arrived)
HANDLERS: dict[type[Message], Callable[[Session, Any], Message]] = {
    Subscribe: _subscribe,
    Next: _next,
    Rewind: _rewind,
    Leave: _leave,
    NextBatch: _next_batch,
    GoToFile: _go_to_file,
    GoToNextFile: _go_to_next_file,
    Stop: _stop,
    Status: _status,
    StreamBatches: _stream_control,
    Credit: _stream_control,
    EndStream: _stream_control,
    InvalidRequest: _invalid,
}


def handle(session: Session, msg: Message) -> Message:
    """The reply to one request."""
    handler = HANDLERS.get(type(msg))
    if handler is None:
        return Error(MessageType.PROTOCOL_ERROR, f"unexpected {msg.TYPE!r}")
    try:
        return handler(session, msg)
    except SessionError as exc:
        return Error(exc.message_type, str(exc))


def _last_word(sock: socket.socket, code: MessageType, text: str) -> None:
    """A final error frame before closing, whatever state the conversation is in; best effort."""
    try:
        sock.settimeout(1.0)
        send_chunks(sock, Connection("server").send(Error(code, text)))
    except OSError:
        pass


def _session_end_line(reporter: Reporter, ended: str) -> None:
    """One line per client at the end: what it was served, for how long, how it ended."""
    records = sum(reporter.records.values())
    per_stream = ", ".join(f"{s} {n}" for s, n in sorted(reporter.records.items()))
    log.info("session ended (%s) after %.1f s: %d records%s, %d bytes in %d replies", ended,
             reporter.clock() - reporter.started_mono, records, f" ({per_stream})" if per_stream else "",
             reporter.bytes, reporter.replies)


def run_child(sock: socket.socket, conn: Connection, peer, config, identity: str, codec: str = "",
              report: socket.socket | None = None, groups: socket.socket | None = None) -> int:
    """Serve one client until it leaves; ``report`` is this child's end of the status channel, ``groups``
    its line to the group ledger."""
    name = f"{peer[0]}:{peer[1]}"
    _set_title(f"ddschildserver {name}")
    logsetup.set_ident(f"ddschildserver[{os.getpid()}] {name}")
    parent_pid = os.getppid()
    _die_with_parent()
    sock.setblocking(True)
    _keepalive(sock)
    import numexpr

    numexpr.set_num_threads(1)  # one child per client: clients, not threads, use the cores
    watch = Watch(sock, conn, parent_pid, config.idle_timeout)
    session = Session(make_catalog(config.data_dir), watch, poll_interval=config.poll_interval,
                      group_link=ChildLink(groups) if groups is not None else None)
    reporter = watch.reporter = Reporter(report, name)
    reporter.session = session

    def reply(message, records: bool = True) -> None:
        reporter.set_state(SENDING)
        if codec and isinstance(message, Data):
            message = compress_data(message, codec)
        chunks = conn.send(message)
        sock.settimeout(config.stall_timeout)
        watch.sending = True  # from now on the parent-death signal aborts the send ...
        try:
            if os.getppid() != parent_pid:  # ... and one that came before is seen here
                raise SessionAbort("parent gone")
            nbytes = send_chunks(sock, chunks)
        finally:
            watch.sending = False
            sock.settimeout(None)
        reporter.sent(message, nbytes, records)

    ended = "client left"
    try:
        reply(Welcome(PROTOCOL_VERSION, identity, os.getpid(), codec))
        log.debug("session started")
        broken: BatchStream | None = None  # a stream an error ended, which an end_stream may still rewind
        while True:
            reporter.set_state(IDLE)
            msg = watch.next_request(session.read_ahead, session.idle_tick)
            reporter.set_state(READING)
            log.log(logsetup.VERBOSE, "request %s", msg)
            if isinstance(msg, StreamBatches) and session.member is not None:
                # a member acknowledges by asking: what it was sent ahead would count as handed
                reply(Error(MessageType.BAD_SUBSCRIPTION, "a group member asks for its records one reply at a time"))
                continue
            if isinstance(msg, StreamBatches):
                # a streamed reply counts for the status when the client used it (its credit, end_stream)
                broken = serve_stream(session, watch, msg, lambda m: reply(m, records=False), reporter)
                continue
            if isinstance(msg, Credit):  # sent before the client saw the error that ended its stream
                continue
            if isinstance(msg, EndStream):
                reply(after_stream(broken, msg))
                broken = None
                continue
            broken = None
            try:
                answer = handle(session, msg)
            except (SessionAbort, ProtocolError):
                raise
            except Exception as exc:  # a bug must cost one answer, not the session
                logsetup.bug(log, "error serving %s", msg.TYPE)
                answer = Error(MessageType.SERVER_ERROR, f"{type(exc).__name__}: {quote(str(exc))}")
            reply(answer)
    except SessionAbort as exc:
        why = str(exc)
        if why == "shutdown":
            ended = "server stopping"
            log.info("server stopping: telling the client")
            _last_word(sock, MessageType.SHUTDOWN, "server is shutting down")
        elif why == "parent gone":
            ended = "parent gone"
            log.warning("parent server is gone: ending the session")
        elif why == "idle":
            ended = "idle"
            log.info("client idle for %.0f s: dropped", config.idle_timeout)
        else:
            log.info("client left")
    except ProtocolError as exc:
        ended = "protocol error"
        log.warning("protocol error: %s", exc)
        _last_word(sock, MessageType.PROTOCOL_ERROR, str(exc))
    except TimeoutError:  # socket.timeout
        ended = "stalled"
        log.warning("client stopped reading for %.0f s: dropped", config.stall_timeout)
    except (ConnectionError, OSError) as exc:
        ended = "connection lost"
        log.info("client connection lost: %s", exc)
    finally:
        _session_end_line(reporter, ended)
        reporter.finish(ended)
        session.close()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
    return EXIT_OK
