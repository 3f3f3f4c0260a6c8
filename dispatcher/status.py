"""What every child is doing, told to the parent: the channel, the child's reporter, the parent's board.

The channel is a ``socketpair(AF_UNIX, SOCK_DGRAM)`` per child, made by the
parent just before the fork. The child keeps one end and sends, now and then,
one datagram holding a whole snapshot of its session as JSON; the parent keeps
the other end in its one ``selectors`` wait and keeps the newest snapshot per
child. Why datagrams on a socketpair:

- Nothing can block. Both ends are non-blocking; a datagram that does not fit
  in the queue is dropped by the sender (``BlockingIOError``), and since each
  one is a complete snapshot, the next one makes up for it.
- No torn reads and no locks: the kernel keeps message boundaries, so the
  parent never sees half a snapshot (a shared-memory slot would need a seqlock,
  whose memory ordering Python cannot express, and a fixed slot size).
- The parent owns it and it dies with the child: at reaping, the parent reads
  what is left in that child's channel (its final snapshot, with its final
  counters, sent before it exits), then closes it and drops the row.

The child sends on a change of state or after a reply, at most every
``REPORT_SECONDS`` (a snapshot held back is sent at the next wait's tick), and
always at the end of its session: a datagram costs one ``send`` and ~20 us of
JSON, a few times a second at most.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import Message
    from .session import Session
    from .streaming import BatchStream

log = logging.getLogger("dds.status")

#: least seconds between two snapshots a busy child sends
REPORT_SECONDS = 0.5
#: largest snapshot sent; longer selections and stream lists are cut short to fit
MAX_REPORT_BYTES = 32 * 1024
#: seconds the recent rate of records sent is averaged over
RATE_SECONDS = 10.0
#: characters of a selection shown
SELECTION_CHARS = 60

#: the per-stream counters of a snapshot that the parent sums over children
PER_STREAM = ("records_sent", "record_bytes_sent")

#: what a child is doing (``state`` of a row)
IDLE = "idle"  # waiting for the client's next request
READING = "reading"  # serving a request: reading and cutting records
WAITING = "waiting for data"  # serving a request: nothing new yet, polling the file
SENDING = "sending"  # writing a reply to the client


def channel() -> tuple[socket.socket, socket.socket]:
    """A new (parent end, child end) pair, both non-blocking and not inherited by exec."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (parent_end, child_end):
        s.setblocking(False)
    return parent_end, child_end


def received(sock: socket.socket, size: int, most: int = 64):
    """The messages waiting on a non-blocking datagram or seqpacket socket, up to ``most`` (the parent's
    loop must get back to its other sockets); stops at the first that is not there, or at an error."""
    for _ in range(most):
        try:
            data = sock.recv(size)
        except OSError:  # BlockingIOError (nothing waiting), InterruptedError, or the socket is broken
            return
        if not data:
            return
        yield data


def short(text: Any, limit: int = SELECTION_CHARS) -> Any:
    """A selection as a status row shows it: cut to ``limit`` characters (dicts: each value)."""
    if isinstance(text, dict):
        return {k: short(v, limit) for k, v in text.items()}
    if isinstance(text, str) and len(text) > limit:
        return text[: limit - 3] + "..."
    return text


# --------------------------------------------------------------------------- child side


class Reporter:
    """A child's side of the channel: counts what was sent and sends snapshots.

    Args:
        sock (socket.socket or None): the child's end of the channel; None: report nothing.
        address (str): the client's ``HOST:PORT``.
        clock (callable): monotonic seconds; default ``time.monotonic``.
    """

    def __init__(self, sock: socket.socket | None, address: str, clock=time.monotonic):
        self.sock = sock
        self.address = address
        self.clock = clock
        self.session: Session | None = None
        self.started = time.time()
        self.started_mono = clock()
        self.state = IDLE
        self.records: dict[str, int] = {}
        self.data_bytes: dict[str, int] = {}  # record data bytes (entries and columns) per stream
        self.bytes = 0
        self.replies = 0
        self.lag: dict[str, int] = {}
        self.age: float | None = None  # of the newest record in the last reply, when it was sent
        self.replied_at: float | None = None  # wall-clock time of the last data reply
        self.skipped: dict[str, int] = {}
        self.ended: str | None = None
        self.stream: BatchStream | None = None  # a stream of batches running (streaming.StreamReport)
        self._sent_at = -1e9
        self._dirty = True

    def set_state(self, state: str) -> None:
        """What the child is doing now (sent with the next snapshot: after a reply, or at a wait's tick)."""
        if state != self.state:
            self.state = state
            self._dirty = True

    def sent(self, message: Message, nbytes: int, records: bool = True) -> None:
        """A reply of ``nbytes`` went out: count its records and keep its freshness (``records`` False:
        a reply of a stream of batches, counted by :meth:`used` when the client used it)."""
        self.replies += 1
        self.bytes += nbytes
        header = getattr(message, "header", None)
        if isinstance(header, dict) and records:
            self.used(header)
        self._dirty = True  # sent at the next tick: by then the child says what it does after the reply

    def used(self, header: dict, partial: dict | None = None) -> None:
        """Count the records of a reply (of ``partial[stream]`` records of each stream: only those) and
        keep its freshness."""
        if partial is not None:
            for d in header.get("parts", ()):
                s, n = d["stream"], min(int(partial.get(d["stream"], 0)), d["length"])
                self.records[s] = self.records.get(s, 0) + n
                self.data_bytes[s] = self.data_bytes.get(s, 0) + (
                    (8 * d["length"] + sum(d["sizes"])) * n // d["length"] if d["length"] else 0)
            self._dirty = True
            return
        ages = []
        for d in header.get("parts", ()):
            s = d["stream"]
            self.records[s] = self.records.get(s, 0) + d["length"]
            self.data_bytes[s] = self.data_bytes.get(s, 0) + 8 * d["length"] + sum(d["sizes"])
            if "lag" in d:
                self.lag[s] = d["lag"]
            if d.get("age"):
                ages.append(d["age"][-1][1])
            if d.get("skipped"):
                self.skipped[s] = self.skipped.get(s, 0) + d["skipped"]
        if ages:
            self.age = min(ages)
            self.replied_at = time.time()
        self._dirty = True

    def due_in(self) -> float:
        """Seconds until a held-back snapshot may go (a large number when none is held back)."""
        if not self._dirty:
            return 3600.0
        return max(0.0, REPORT_SECONDS - (self.clock() - self._sent_at))

    def tick(self) -> None:
        """Send a snapshot if one is due."""
        if self._dirty and self.clock() - self._sent_at >= REPORT_SECONDS:
            self.send()

    def send(self) -> None:
        """Send a snapshot now (a full queue drops it: the next one replaces it)."""
        if self.sock is None:
            return
        self._sent_at = self.clock()
        self._dirty = False
        data = json.dumps(self.snapshot(), separators=(",", ":"), allow_nan=False).encode()
        if len(data) > MAX_REPORT_BYTES:
            data = json.dumps(self.snapshot(compact=True), separators=(",", ":"), allow_nan=False).encode()
        try:
            self.sock.send(data[:MAX_REPORT_BYTES])
        except OSError:  # queue full (BlockingIOError) or the parent is gone: never wait for it
            pass

    def finish(self, ended: str) -> None:
        """The session is over: the last snapshot, whatever the rate."""
        self.ended = ended
        self.state = "ended"
        self.send()

    def snapshot(self, compact: bool = False) -> dict:
        session = self.session
        sub = session.sub if session is not None else None
        limit = 20 if compact else SELECTION_CHARS
        streams = list(sub.streams) if sub is not None else []
        entries = {}
        if session is not None:
            entries = {s: st.served for s, st in session.reader.streams.items()}
            held = self.stream.held_position() if self.stream is not None else None
            if held:  # the client has not used what a stream sent ahead yet
                entries.update(held)
        snap: dict[str, Any] = {
            "pid": os.getpid(),
            "address": self.address,
            "connected_at": round(self.started, 3),
            "streams": streams[:20] if compact else streams,
            "keep_up": sub.keep_up.value if sub is not None else None,
            "selection": short(sub.selection, limit) if sub is not None else None,
            "prescale": sub.prescale if sub is not None else None,
            "sync": sub.sync if sub is not None else None,
            "group": sub.group if sub is not None else None,
            "file": session.file if session is not None else None,
            "entries": entries,
            "lag": dict(self.lag),
            "age": self.age,
            "replied_at": self.replied_at,
            "skipped": dict(self.skipped),
            "records_sent": dict(self.records),
            "record_bytes_sent": dict(self.data_bytes),
            "bytes_sent": self.bytes,
            "replies": self.replies,
            "state": self.state,
            "ended": self.ended,
            "at": round(time.time(), 3),
        }
        if compact:
            snap = {k: v for k, v in snap.items() if not isinstance(v, dict) or len(v) <= 50}
        return snap


# --------------------------------------------------------------------------- parent side


class Row:
    """The parent's view of one child: its channel, its newest snapshot, and its recent records."""

    __slots__ = ("pid", "address", "sock", "snap", "born", "samples")

    def __init__(self, pid: int, address: str, sock: socket.socket):
        self.pid = pid
        self.address = address
        self.sock = sock
        self.snap: dict[str, Any] = {}
        self.born = time.monotonic()
        self.samples: collections.deque[tuple[float, int]] = collections.deque()  # (monotonic, records sent)

    def take(self, snap: dict, now: float) -> None:
        self.snap = snap
        self.samples.append((now, _total(snap.get("records_sent"))))
        # keep one sample at least RATE_SECONDS old as the base of the rate
        while len(self.samples) > 2 and self.samples[1][0] <= now - RATE_SECONDS:
            self.samples.popleft()

    def rate(self, now: float) -> float:
        """Records per second sent over the last RATE_SECONDS (or since connecting, if later)."""
        if not self.samples:
            return 0.0
        base_n = 0
        window = min(RATE_SECONDS, max(now - self.born, 1e-3))
        for t, n in self.samples:
            if t <= now - RATE_SECONDS:
                base_n, window = n, RATE_SECONDS
        return max(0, self.samples[-1][1] - base_n) / window


def _total(counts: Any) -> int:
    if not isinstance(counts, dict):
        return 0
    return sum(v for v in counts.values() if isinstance(v, int) and not isinstance(v, bool))


def _counts(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)}


class Board:
    """The parent's side: one row per child, fed by the children's channels; totals for metrics.

    The parent registers each row's socket in its selector (data: the row) and calls
    :meth:`readable` when one has datagrams; it calls :meth:`remove` when it reaps the child.
    """

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}
        # what children already reaped sent: per counter ("records_sent", "record_bytes_sent"), per stream
        self.retired: dict[str, dict[str, int]] = {k: {} for k in PER_STREAM}
        self.retired_bytes = 0
        self.exits: collections.Counter[str] = collections.Counter()  # child exits by cause

    def add(self, pid: int, address: str, sock: socket.socket) -> Row:
        row = self.rows[pid] = Row(pid, address, sock)
        return row

    def readable(self, row: Row) -> None:
        """Read what the row's child sent (bounded); keep the newest snapshot."""
        now = time.monotonic()
        for data in received(row.sock, MAX_REPORT_BYTES):
            try:
                snap = json.loads(data)
            except ValueError:
                continue
            if isinstance(snap, dict):
                row.take(snap, now)

    def remove(self, pid: int, failure: str | None) -> Row | None:
        """The child was reaped: read its last words, move its counters to the totals, drop its row.

        Args:
            pid (int): the child.
            failure (str or None): how it failed (killed by a signal, a bad exit status); None: it
                exited 0, and its session's own end ("client left", "idle"...) is the cause counted.
        """
        row = self.rows.pop(pid, None)
        if row is None:
            self.exits[failure or "ended"] += 1
            return None
        self.readable(row)
        ended = row.snap.get("ended")
        self.exits[failure or (ended if isinstance(ended, str) else "ended")] += 1
        for key in PER_STREAM:
            into = self.retired[key]
            for s, n in _counts(row.snap.get(key)).items():
                into[s] = into.get(s, 0) + n
        b = row.snap.get("bytes_sent")
        if isinstance(b, int) and not isinstance(b, bool):
            self.retired_bytes += b
        row.sock.close()
        return row

    def close_all(self) -> None:
        """In a new child: the channels of its siblings are not its own."""
        for row in self.rows.values():
            row.sock.close()
        self.rows.clear()

    # ------------------------------------------------------------------ totals

    def per_stream(self, key: str = "records_sent") -> dict[str, int]:
        """A per-stream counter (one of PER_STREAM) summed over every child, reaped or not."""
        total = dict(self.retired[key])
        for row in self.rows.values():
            for s, n in _counts(row.snap.get(key)).items():
                total[s] = total.get(s, 0) + n
        return total

    def bytes_sent(self) -> int:
        return self.retired_bytes + sum(
            b for b in (row.snap.get("bytes_sent") for row in self.rows.values())
            if isinstance(b, int) and not isinstance(b, bool))

    def clients(self, now_wall: float | None = None) -> list[dict]:
        """One dict per child, as ``ddscomm --status --json`` shows it (see docs/STATUS.md)."""
        now = time.monotonic()
        wall = time.time() if now_wall is None else now_wall
        out = []
        for pid, row in sorted(self.rows.items()):
            s = row.snap
            lag = _counts(s.get("lag"))
            age = s.get("age")
            replied = s.get("replied_at")
            lag_seconds = None
            if isinstance(age, (int, float)) and isinstance(replied, (int, float)):
                # behind: the newest record served has aged since; caught up: not behind at all
                lag_seconds = 0.0 if not any(lag.values()) else round(age + max(0.0, wall - replied), 3)
            out.append({
                "address": row.address,
                "pid": pid,
                "connected_for": round(now - row.born, 3),
                "streams": s.get("streams", []),
                "keep_up": s.get("keep_up"),
                "selection": s.get("selection"),
                "prescale": s.get("prescale"),
                "sync": s.get("sync"),
                "group": s.get("group"),
                "file": s.get("file"),
                "entries": _counts(s.get("entries")),
                "lag": lag,
                "lag_seconds": lag_seconds,
                "skipped": _counts(s.get("skipped")),
                "records_sent": _counts(s.get("records_sent")),
                "bytes_sent": s.get("bytes_sent", 0) if isinstance(s.get("bytes_sent"), int) else 0,
                "rate": round(row.rate(now), 1),
                "state": s.get("state", "starting"),
            })
        return out
