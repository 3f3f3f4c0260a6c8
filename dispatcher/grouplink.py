"""The line between a child and the parent's group ledger.

Each child gets, at its fork, one end of a ``socketpair(AF_UNIX, SOCK_SEQPACKET)``:
reliable and in order (unlike the status datagrams, nothing here may be lost),
with message boundaries (no framing to write), and private to the pair. The
child sends small JSON requests; ``join`` and ``take`` are answered, the others
(``counted``, ``sent``, ``ack``, ``release``, ``leave``) are not, and since the socket keeps their
order the parent has always seen them before the child's next ``take``.

The parent's end is non-blocking in its one ``selectors`` wait. A child waits for
at most one answer at a time, so an answer always fits in the socket's buffer
and the parent never waits for a child. At reaping, the parent reads what is
left in the child's end (its last ``counted`` or ``leave``) before it tells the
ledger the child is gone.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from typing import Any

from .groups import GroupError, Ledger
from .status import received

log = logging.getLogger("dds.groups")

#: largest message either way
MAX_MESSAGE = 64 * 1024
#: seconds a child waits for the parent's answer (it answers at once: this is a lost parent)
ANSWER_SECONDS = 10.0
#: least seconds between two writes of the group state file
SAVE_SECONDS = 1.0


def channel() -> tuple[socket.socket, socket.socket]:
    """A new (parent end, child end) pair; the parent's end is non-blocking."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent_end.setblocking(False)
    return parent_end, child_end


# --------------------------------------------------------------------------- child side


class ChildLink:
    """A child's end: requests to the ledger.

    Args:
        sock (socket.socket): the child's end of the channel.
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock
        sock.settimeout(ANSWER_SECONDS)

    def tell(self, **message: Any) -> None:
        """A request that is not answered."""
        self.sock.send(json.dumps(message, separators=(",", ":")).encode())

    def ask(self, **message: Any) -> dict:
        """A request and its answer; GroupError with the ledger's reason when it refuses."""
        self.tell(**message)
        try:
            data = self.sock.recv(MAX_MESSAGE)
        except TimeoutError:
            raise GroupError(f"the server's group ledger did not answer within {ANSWER_SECONDS:g} s") from None
        if not data:
            raise GroupError("the server's group ledger is gone")
        answer = json.loads(data)
        if "error" in answer:
            raise GroupError(answer["error"])
        return answer

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- parent side


class Line:
    """The parent's end of one child's channel."""

    __slots__ = ("pid", "address", "sock")

    def __init__(self, pid: int, address: str, sock: socket.socket):
        self.pid = pid
        self.address = address
        self.sock = sock


class Desk:
    """The parent's side: the ledger, fed by every child's line.

    Args:
        ledger (Ledger): the groups.
        state_file (str or None): where the groups are kept across restarts of the parent; None: nowhere.
        clock (callable): monotonic seconds.
    """

    def __init__(self, ledger: Ledger, state_file: str | None = None, clock=time.monotonic):
        self.ledger = ledger
        self.lines: dict[int, Line] = {}
        self.state_file = state_file
        self.clock = clock
        self._saved_at = -1e9
        self._dirty = False
        if state_file and os.path.exists(state_file):
            self._load(state_file)

    def add(self, pid: int, address: str, sock: socket.socket) -> Line:
        line = self.lines[pid] = Line(pid, address, sock)
        return line

    def readable(self, line: Line) -> None:
        """Handle what the line's child sent (bounded); answer what needs an answer."""
        for data in received(line.sock, MAX_MESSAGE):
            answer = self.handle(line, data)
            if answer is not None:
                try:
                    line.sock.send(json.dumps(answer, separators=(",", ":")).encode())
                except OSError as exc:  # the child is gone or its end is closed: it hears nothing more
                    log.debug("no answer to child %d: %s", line.pid, exc)

    def handle(self, line: Line, data: bytes) -> dict | None:
        """One request of a child: the answer (None: it wants none)."""
        now = self.clock()
        try:
            m = json.loads(data)
            op = m["op"]
            if op == "join":
                answer: dict | None = self.ledger.join(
                    line.pid, line.address, str(m["group"]), dict(m["key"]), str(m["distribution"]),
                    str(m["restore"]), str(m["start"]), m.get("place"), now)
            elif op == "take":
                answer = self.ledger.take(line.pid, int(m["want"]), m.get("view"), bool(m.get("ack", True)))
            elif op == "counted":
                self.ledger.counted(line.pid, int(m["id"]), int(m["passed"]), int(m["records"]))
                answer = None
            elif op == "sent":
                self.ledger.sent(line.pid, int(m["id"]), int(m["until"]), int(m["records"]))
                answer = None
            elif op == "ack":
                self.ledger.ack(line.pid)
                answer = None
            elif op == "release":
                self.ledger.release(line.pid, int(m["id"]), int(m["entry"]), int(m["phase"]), int(m["records"]),
                                    int(m.get("sent", 0)))
                answer = None
            elif op == "leave":
                self.ledger.leave(line.pid, clean=True, now=now)
                answer = None
            else:
                raise GroupError(f"unknown request {op!r}")
        except GroupError as exc:
            return {"error": str(exc)}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a child's bug: said, not fatal
            log.error("malformed group request from child %d: %s: %s", line.pid, type(exc).__name__, exc)
            return {"error": f"malformed group request: {type(exc).__name__}"}
        self._dirty = True
        return answer

    def remove(self, pid: int) -> Line | None:
        """The child was reaped: read its last words, then it leaves its group (not cleanly, unless
        it said so)."""
        line = self.lines.pop(pid, None)
        if line is not None:
            self.readable(line)
            line.sock.close()
        if pid in self.ledger.where:
            self.ledger.gone(pid, self.clock())
            self._dirty = True
        return line

    def close_all(self) -> None:
        """In a new child: the lines of its siblings are not its own."""
        for line in self.lines.values():
            line.sock.close()
        self.lines.clear()

    # ------------------------------------------------------------------ time and state

    def tick(self) -> None:
        """Forget groups that lingered long enough; keep the state file current (at most every SAVE_SECONDS)."""
        now = self.clock()
        before = len(self.ledger.groups)
        self.ledger.expire(now)
        if len(self.ledger.groups) != before:
            self._dirty = True
        if self._dirty and self.state_file and now - self._saved_at >= SAVE_SECONDS:
            self.save()

    def save(self) -> None:
        """Write the groups to the state file (atomically: a new file renamed over the old one)."""
        if not self.state_file:
            return
        self._saved_at = self.clock()
        self._dirty = False
        directory = os.path.dirname(os.path.abspath(self.state_file))
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".groups-", dir=directory)
            with os.fdopen(fd, "w") as f:
                json.dump(self.ledger.dump(), f, separators=(",", ":"))
            os.replace(tmp, self.state_file)
        except OSError as exc:
            log.error("cannot write the group state file %s: %s", self.state_file, exc)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)  # half written: the old state file stands

    def _load(self, path: str) -> None:
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            log.error("cannot read the group state file %s (%s): groups start afresh", path, exc)
            return
        n = self.ledger.load(data, self.clock())
        if n:
            log.info("%d group(s) taken from %s: each keeps its place for %g s until a member joins", n, path,
                     self.ledger.linger)
