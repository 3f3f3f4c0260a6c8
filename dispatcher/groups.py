"""Shared subscriptions: the parent's ledger of every group, its place and the records in flight.

A *group* is the clients that subscribed with the same group name: each passing
record goes to one live member. The ledger lives in the parent, so it outlives
any child; it never reads ROOT or compiles a selection. It deals in *leases*:
ranges ``[start, stop)`` of one stream's entries in one file, handed to one
member. The member's child reads the range, applies the cut and the prescale,
and sends what passes; the ledger only learns counts.

- **Place.** A group has a current file and, per stream, the next entry no lease
  has covered yet (its *frontier*). Members tell it what they see of that file
  (entry counts; whether it is closed and read to its end; the next file): a
  request for work cuts a lease from the frontier, or answers "look at this
  file" when nothing is known to be there; the group moves to the next file
  once the closed one is covered to its final length.
- **Acknowledgement.** A member acknowledges every lease it was handed by asking
  for more (``take``) or by leaving cleanly. A lease given back in part
  (``release``: records prefetched but not handed to the user) returns its rest
  to the group as work, not redelivered.
- **Redelivery.** When a member's session ends otherwise (the parent reaps its
  child without a clean leave), the leases it held go back to the group, ahead
  of new work; those whose records were sent are marked redelivered
  (``restore="redeliver"``, at least once) or dropped (``restore="drop"``, at
  most once). A lease whose records were never sent goes back unmarked.
- **Prescale.** The phase of a lease is the number of records that passed the cut
  before it (mod prescale). With prescale > 1 a stream's next lease is cut only
  after the previous one was counted (the member counts right after its cut,
  before it sends), so the phase is exact; a released rest starts at a kept
  record (phase 0).
- **Distribution.** ``balanced``: whoever asks gets the next lease. ``roundrobin``:
  leases are cut in turn for the members in join order and queued for them; a
  member ``RR_QUEUE`` leases behind is skipped until it catches up.
- **Lingering.** A group whose members all left keeps its place for ``linger``
  seconds; a member joining in that time continues where it stopped.

Everything here is plain data and arithmetic, driven by the parent's loop
(:mod:`dispatcher.grouplink`) and testable without processes.
"""

from __future__ import annotations

import collections
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

from .subscription import DISTRIBUTIONS, RESTORES

log = logging.getLogger("dds.groups")

#: seconds a group whose members all left keeps its place (ddsparentserver --group-linger)
LINGER_SECONDS = 300.0
#: leases queued for one roundrobin member before it is skipped
RR_QUEUE = 2
#: entries one lease covers at most
MAX_LEASE = 1_000_000
#: basket boundaries kept per stream (ahead of the frontier)
MAX_EDGES = 4096
#: groups one server keeps at most (a new one beyond it first forgets the group that has lingered longest)
MAX_GROUPS = 1000


class GroupError(ValueError):
    """A request the ledger refuses; the message says why (it goes back to the client)."""


@dataclass
class Lease:
    """A range of one stream's entries handed to one member.

    Its member sends its records in one or more replies: ``[start, acked)`` is done,
    ``[acked, sent)`` was sent and not yet acknowledged, ``[sent, stop)`` not sent. ``sent`` is
    always ``stop`` or the entry of a record kept by the prescale, so a part starting there has
    phase 0.
    """

    id: int
    file: str
    stream: str
    start: int
    stop: int
    phase: int = 0  # records that passed the cut before ``start``, mod prescale
    redelivered: bool = False
    fresh: bool = False  # cut from the frontier (its count sets the next lease's phase)
    records: int = 0  # records it holds after cut and prescale, once counted
    acked: int = -1  # see above (-1: start)
    acked_phase: int = -1  # the phase at ``acked`` (-1: phase)
    sent: int = -1  # see above (-1: start)
    sent_records: int = 0
    acked_records: int = 0

    def __post_init__(self) -> None:
        if self.acked < 0:
            self.acked = self.start
        if self.acked_phase < 0:
            self.acked_phase = self.phase
        if self.sent < 0:
            self.sent = self.start

    @property
    def in_flight(self) -> int:
        """Records sent and not acknowledged."""
        return self.sent_records - self.acked_records

    def to_dict(self) -> dict:
        return {"id": self.id, "file": self.file, "stream": self.stream, "start": self.start, "stop": self.stop,
                "phase": self.phase, "redelivered": self.redelivered}


@dataclass
class Member:
    pid: int
    address: str
    want: int = 1000
    held: dict[int, Lease] = field(default_factory=dict)  # handed, not yet acknowledged
    queue: collections.deque[Lease] = field(default_factory=collections.deque)  # roundrobin: cut for it
    handed: int = 0  # records handed to this member (counted leases)


@dataclass
class Group:
    name: str
    key: dict  # streams, selection, prescale: what every member must share
    distribution: str
    restore: str
    start: str  # the first member's start rule (used while the group has no file yet)
    file: str | None = None
    frontier: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # entries of each stream in ``file``, largest seen
    final: bool = False  # ``counts`` are the closed file's final ones
    phase: dict[str, int] = field(default_factory=dict)  # the next fresh lease's phase, per stream
    uncounted: dict[str, int] = field(default_factory=dict)  # stream -> fresh lease not yet counted
    edges: dict[str, list[int]] = field(default_factory=dict)  # basket boundaries ahead of the frontier
    returned: collections.deque[Lease] = field(default_factory=collections.deque)  # handed out first
    members: dict[int, Member] = field(default_factory=dict)
    turn: int = 0  # roundrobin: index (in join order) of the member whose turn is next
    next_stream: int = 0  # the stream a fresh lease is cut from first (streams take turns)
    left_at: float | None = None  # when its last member left
    handed: int = 0
    redelivered: int = 0
    dropped: int = 0

    @property
    def streams(self) -> list[str]:
        return list(self.key["streams"])

    @property
    def prescale(self) -> int:
        return int(self.key.get("prescale", 1))

    def in_flight(self) -> tuple[int, int]:
        """(leases, records) sent to members and not yet acknowledged."""
        held = [lease for m in self.members.values() for lease in m.held.values() if lease.in_flight]
        return len(held), sum(lease.in_flight for lease in held)


def group_key(sub: dict) -> dict:
    """What members of one group must share, from a subscription as ``Subscription.to_dict`` gives it."""
    return {"streams": list(sub["streams"]), "selection": sub.get("selection"), "prescale": sub.get("prescale", 1)}


class Ledger:
    """Every group of one parent server.

    Args:
        linger (float): seconds a group without members keeps its place.
    """

    def __init__(self, linger: float = LINGER_SECONDS):
        self.linger = linger
        self.groups: dict[str, Group] = {}
        self.where: dict[int, str] = {}  # member pid -> its group
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ membership

    def join(self, pid: int, address: str, name: str, key: dict, distribution: str, restore: str,
             start: str, place: dict | None, now: float) -> dict:
        """Add ``pid`` to group ``name`` (made with the given start and place if it has none).

        ``place`` is ``{"file", "entries"}``: where the first member's start puts the group (None:
        no file yet; the group waits for one, by the ``start`` rule). Returns the group's place.
        """
        if distribution not in DISTRIBUTIONS:
            raise GroupError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, not {distribution!r}")
        if restore not in RESTORES:
            raise GroupError(f"restore must be one of {', '.join(RESTORES)}, not {restore!r}")
        self.leave(pid, clean=True, now=now)  # a new subscription of a member: the old one ends cleanly
        g = self.groups.get(name)
        if g is not None:
            differs = [k for k in ("streams", "selection", "prescale") if g.key.get(k) != key.get(k)]
            if g.distribution != distribution:
                differs.append("distribution")
            if g.restore != restore:
                differs.append("restore")
            if differs:
                theirs = ", ".join(f"{k}={_show(g, k)}" for k in differs)
                raise GroupError(f"group {name!r} is subscribed with {theirs}; a member must subscribe "
                                 f"the same way (or choose another group name)")
            created = False
        else:
            self._make_room()
            g = self.groups[name] = Group(name, dict(key), distribution, restore, start)
            if place is not None:
                self._place(g, place["file"], place.get("entries") or {})
            created = True
            log.info("group %s made by %s at %s", name, address, self._where(g))
        g.members[pid] = Member(pid, address)
        g.left_at = None
        self.where[pid] = name
        if not created:
            log.info("%s joined group %s (%d members) at %s", address, name, len(g.members), self._where(g))
        return {"group": name, "created": created, "file": g.file, "entries": dict(g.frontier),
                "members": len(g.members)}

    def _make_room(self) -> None:
        if len(self.groups) < MAX_GROUPS:
            return
        lingering = [g for g in self.groups.values() if not g.members and g.left_at is not None]
        if not lingering:
            raise GroupError(f"this server already keeps {MAX_GROUPS} groups with members: no room for another")
        oldest = min(lingering, key=lambda g: g.left_at or 0.0)
        del self.groups[oldest.name]
        log.warning("group %s forgotten early: %d groups are kept at most (it was at %s)", oldest.name, MAX_GROUPS,
                    self._where(oldest))

    def _place(self, g: Group, file: str, entries: dict[str, int]) -> None:
        g.file = file
        g.frontier = {s: int(entries.get(s, 0)) for s in g.streams}
        g.counts = dict(g.frontier)
        g.final = False
        g.edges = {}

    @staticmethod
    def _where(g: Group) -> str:
        if g.file is None:
            return f"no file yet (start {g.start!r})"
        return f"{g.file} " + ", ".join(f"{s} {n}" for s, n in g.frontier.items())

    def leave(self, pid: int, clean: bool, now: float) -> None:
        """``pid`` is no longer a member: clean (everything it was handed is acknowledged) or not
        (its session ended otherwise: what it held goes back to the group, or is dropped)."""
        name = self.where.pop(pid, None)
        g = self.groups.get(name) if name is not None else None
        if g is None:
            return
        m = g.members.pop(pid)
        if clean:
            m.held.clear()
        else:
            self._restore(g, m)
        for lease in reversed(m.queue):  # roundrobin leases cut for it and never taken: plain work again
            g.returned.appendleft(lease)
        if not g.members:
            g.left_at = now
            log.info("group %s has no members left: it keeps its place (%s) for %g s", g.name, self._where(g),
                     self.linger)

    def gone(self, pid: int, now: float) -> None:
        """The parent reaped ``pid``: if it had not left cleanly, it is treated as crashed."""
        if pid in self.where:
            self.leave(pid, clean=False, now=now)

    def _restore(self, g: Group, m: Member) -> None:
        back, lost = [], 0
        for lease in sorted(m.held.values(), key=lambda x: (x.file, x.stream, x.start)):
            parts, dropped = self._back(g, lease)
            back += parts
            lost += dropped
        for lease in reversed(back):
            g.returned.appendleft(lease)
        if lost:
            g.dropped += lost
            log.warning("group %s: member %s ended without acknowledging %d records; dropped (restore=drop)",
                        g.name, m.address, lost)
        if back:
            log.info("group %s: member %s ended without acknowledging %d ranges; they go to the other members",
                     g.name, m.address, len(back))

    def _back(self, g: Group, lease: Lease) -> tuple[list[Lease], int]:
        """What of a lease whose member is gone goes back to the group (what was sent and not acknowledged
        marked redelivered, or dropped), and how many records were dropped."""
        if lease.acked == lease.start and lease.sent == lease.start:  # untouched: it goes back as it was
            lease.records = lease.sent_records = lease.acked_records = 0
            return [lease], 0
        out, lost = [], 0
        if lease.sent > lease.acked and lease.in_flight:  # (none: only entries the cut left out)
            if g.restore == "drop":
                lost = lease.in_flight
            else:
                g.redelivered += lease.in_flight
                out.append(Lease(next(self._ids), lease.file, lease.stream, lease.acked, lease.sent,
                                 lease.acked_phase, True))
        if lease.sent < lease.stop:
            out.append(Lease(next(self._ids), lease.file, lease.stream, lease.sent, lease.stop, 0, lease.redelivered))
        return out, lost

    def expire(self, now: float) -> None:
        """Forget groups that have had no member for longer than ``linger``."""
        for name, g in list(self.groups.items()):
            if not g.members and g.left_at is not None and now - g.left_at >= self.linger:
                del self.groups[name]
                log.info("group %s forgotten: no member for %g s (it was at %s)", name, self.linger, self._where(g))

    # ------------------------------------------------------------------ work

    def _member(self, pid: int) -> tuple[Group, Member]:
        name = self.where.get(pid)
        if name is None or name not in self.groups:
            raise GroupError("not a member of a group: subscribe with group= first")
        g = self.groups[name]
        return g, g.members[pid]

    def take(self, pid: int, want: int, view: dict | None, ack: bool = True) -> dict:
        """The member asks for more: everything it was sent is acknowledged (``ack``; False: its child
        reads ahead, the client has not asked); the reply is a lease (``{"lease": {...}}``) or where to
        look (``{"look": file or None, "start": rule}``).

        ``view`` is what the member sees of the file the group is in: ``{"file", "counts":
        {stream: entries}, "final": bool, "next": name or None}`` (None: it has not looked yet).
        """
        g, m = self._member(pid)
        if ack:
            self.ack(pid)
        m.want = max(1, min(int(want), MAX_LEASE))
        if view is not None:
            self._learn(g, view)
        lease = self._work_for(g, m)
        if lease is None:
            return {"look": g.file, "start": g.start, "entries": dict(g.frontier)}
        m.held[lease.id] = lease
        return {"lease": lease.to_dict(), "entries": dict(g.frontier)}

    def _learn(self, g: Group, view: dict) -> None:
        file = view.get("file")
        if g.file is None:
            if file is not None:  # the first file appeared: the group starts there, at entry 0
                self._place(g, file, {})
            else:
                return
        if file != g.file:
            return
        for s, n in (view.get("counts") or {}).items():
            if s in g.frontier:
                g.counts[s] = max(g.counts.get(s, 0), int(n))
        for s, edges in (view.get("edges") or {}).items():
            if s in g.frontier:
                lo = g.frontier[s]
                g.edges[s] = sorted({e for e in (*g.edges.get(s, ()), *map(int, edges)) if e > lo})[:MAX_EDGES]
        if view.get("final"):
            g.final = True
        nxt = view.get("next")
        if g.final and nxt and nxt > g.file and not self._fresh_work(g):
            log.debug("group %s moves on to %s", g.name, nxt)
            self._place(g, nxt, {})

    def _fresh_work(self, g: Group) -> bool:
        return any(g.frontier[s] < g.counts.get(s, 0) for s in g.streams)

    def _work_for(self, g: Group, m: Member) -> Lease | None:
        if g.returned:
            return g.returned.popleft()
        if g.distribution == "balanced":
            return self._cut(g, m.want)
        if m.queue:
            return m.queue.popleft()
        order = list(g.members.values())
        for _ in range(len(order) * RR_QUEUE + 1):  # a bounded round: each member's queue is bounded too
            turn = order[g.turn % len(order)]
            if turn is not m and len(turn.queue) >= RR_QUEUE:
                g.turn += 1
                continue
            lease = self._cut(g, turn.want)
            if lease is None:
                return None
            g.turn += 1
            if turn is m:
                return lease
            turn.queue.append(lease)
        return None

    def _cut(self, g: Group, want: int) -> Lease | None:
        """A fresh lease from the frontier of the next stream that has entries no lease covered."""
        if g.file is None:
            return None
        streams = g.streams
        for i in range(len(streams)):
            s = streams[(g.next_stream + i) % len(streams)]
            lo, hi = g.frontier[s], g.counts.get(s, 0)
            if lo >= hi or (g.prescale > 1 and s in g.uncounted):
                continue
            stop = min(hi, self._aligned(g, s, lo, want))
            lease = Lease(next(self._ids), g.file, s, lo, stop, g.phase.get(s, 0), fresh=True)
            g.frontier[s] = stop
            if g.prescale > 1:
                g.uncounted[s] = lease.id
            g.next_stream = (g.next_stream + i + 1) % len(streams)
            return lease
        return None

    def ack(self, pid: int) -> None:
        """The member's client asked again: whatever it was sent is done."""
        _, m = self._member(pid)
        for i, lease in list(m.held.items()):
            if lease.sent > lease.acked:
                lease.acked, lease.acked_phase, lease.acked_records = lease.sent, 0, lease.sent_records
            if lease.acked >= lease.stop:
                del m.held[i]

    @staticmethod
    def _aligned(g: Group, s: str, lo: int, want: int) -> int:
        """Where a lease from ``lo`` of about ``want`` entries ends: at a basket boundary a member reported
        between ``want/2`` and ``2 want`` entries on (the nearest one at or after ``lo + want`` first), so
        that no basket is decompressed by two members; else at ``lo + want``."""
        edges = [e for e in g.edges.get(s, ()) if e > lo]
        g.edges[s] = edges
        target = lo + want
        after = [e for e in edges if target <= e <= lo + 2 * want]
        if after:
            return after[0]
        before = [e for e in edges if lo + want // 2 <= e < target]
        return before[-1] if before else target

    def counted(self, pid: int, lease_id: int, passed: int, records: int) -> None:
        """The member cut lease ``lease_id``: ``passed`` entries passed the cut, ``records`` remain after the
        prescale (a lease with none is as good as sent: nothing of it can be lost)."""
        g, m = self._member(pid)
        lease = m.held.get(lease_id)
        if lease is None:
            return
        lease.records = int(records)
        if lease.records == 0:
            lease.sent = lease.stop
        if g.uncounted.get(lease.stream) == lease.id:
            del g.uncounted[lease.stream]
            g.phase[lease.stream] = (lease.phase + int(passed)) % g.prescale

    def sent(self, pid: int, lease_id: int, until: int, records: int) -> None:
        """The member is sending ``records`` more records of lease ``lease_id``, up to entry ``until`` (the
        next record it holds, or the lease's stop): from now on they may reach a user."""
        g, m = self._member(pid)
        lease = m.held.get(lease_id)
        if lease is None or not lease.sent <= until <= lease.stop:
            return
        lease.sent = until
        lease.sent_records += int(records)
        g.handed += int(records)
        m.handed += int(records)

    def release(self, pid: int, lease_id: int, entry: int, phase: int, records: int, sent: int = 0) -> None:
        """Of lease ``lease_id``, the entries from ``entry`` on (``phase`` records passed the cut before it,
        mod prescale; ``records`` of its counted records among them, ``sent`` of those sent but not handed
        to the user) were not used: they go back to the group as work, first in line; the lease keeps the
        entries before ``entry``."""
        g, m = self._member(pid)
        lease = m.held.get(lease_id)
        if lease is None or not lease.acked <= entry < lease.stop:
            return
        rest = Lease(next(self._ids), lease.file, lease.stream, entry, lease.stop, phase % g.prescale,
                     lease.redelivered)
        sent = max(0, min(int(sent), lease.in_flight))
        lease.sent_records -= sent
        g.handed -= sent
        m.handed -= sent
        lease.records -= max(0, min(int(records), lease.records))
        lease.stop, lease.sent = entry, min(lease.sent, entry)
        if lease.acked >= lease.stop:
            del m.held[lease_id]
        if entry == lease.start and g.uncounted.get(lease.stream) == lease.id:
            g.uncounted[lease.stream] = rest.id  # not cut yet: whoever cuts it sets the next phase
            rest.fresh = True
        g.returned.appendleft(rest)

    # ------------------------------------------------------------------ status and state

    def status(self, now: float) -> list[dict]:
        """One dict per group, as ``ddscomm --status --json`` shows it (docs/GROUPS.md)."""
        out = []
        for name, g in sorted(self.groups.items()):
            leases, records = g.in_flight()
            out.append({
                "name": name,
                "streams": g.streams,
                "distribution": g.distribution,
                "restore": g.restore,
                "file": g.file,
                "entries": dict(g.frontier),
                "members": [{"pid": m.pid, "address": m.address, "records": m.handed,
                             "in_flight": sum(x.in_flight for x in m.held.values())} for m in g.members.values()],
                "in_flight": records,
                "in_flight_ranges": leases,
                "returned_ranges": len(g.returned),
                "records_handed": g.handed,
                "records_redelivered": g.redelivered,
                "records_dropped": g.dropped,
                "lingering_for": None if g.members or g.left_at is None else round(
                    max(0.0, g.left_at + self.linger - now), 1),
            })
        return out

    def dump(self) -> dict:
        """The groups as JSON-able data: what a restarted parent needs to continue (see :meth:`load`)."""
        groups = []
        for g in self.groups.values():
            pending = [lease for m in g.members.values() for lease in (*m.held.values(), *m.queue)]
            groups.append({
                "name": g.name, "key": g.key, "distribution": g.distribution, "restore": g.restore,
                "start": g.start, "file": g.file, "frontier": g.frontier, "counts": g.counts, "final": g.final,
                "phase": g.phase, "uncounted": g.uncounted,
                "returned": [_lease_state(x) for x in (*g.returned, *pending)],
            })
        return {"version": 1, "groups": groups}

    def load(self, data: Any, now: float) -> int:
        """Groups from :meth:`dump` of an earlier parent, each lingering until a member joins. What their
        members held then goes back to them as work (marked redelivered where it had been sent, or
        dropped with ``restore="drop"``). Returns how many groups were taken; malformed data: none."""
        try:
            groups = data["groups"]
            loaded = []
            for d in groups:
                g = Group(str(d["name"]), dict(d["key"]), str(d["distribution"]), str(d["restore"]), str(d["start"]))
                g.file = d["file"]
                g.frontier = {str(k): int(v) for k, v in d["frontier"].items()}
                g.counts = {str(k): int(v) for k, v in d["counts"].items()}
                g.final = bool(d["final"])
                g.phase = {str(k): int(v) for k, v in d["phase"].items()}
                uncounted = {int(v): str(k) for k, v in d["uncounted"].items()}
                for x in d["returned"]:
                    lease = Lease(next(self._ids), str(x["file"]), str(x["stream"]), int(x["start"]), int(x["stop"]),
                                  int(x["phase"]), bool(x["redelivered"]), bool(x["fresh"]), int(x["records"]),
                                  int(x["acked"]), int(x["acked_phase"]), int(x["sent"]), int(x["sent_records"]),
                                  int(x["acked_records"]))
                    if int(x["id"]) in uncounted:
                        g.uncounted[uncounted[int(x["id"])]] = lease.id
                    parts, lost = self._back(g, lease)
                    g.dropped += lost
                    g.returned.extend(parts)
                kept = {x.id for x in g.returned}
                g.uncounted = {s: i for s, i in g.uncounted.items() if i in kept}
                g.left_at = now
                loaded.append(g)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            log.error("group state not taken (malformed: %s: %s); groups start afresh", type(exc).__name__, exc)
            return 0
        for g in loaded:
            self.groups[g.name] = g
        return len(loaded)


def _lease_state(x: Lease) -> dict:
    return {**x.to_dict(), "fresh": x.fresh, "records": x.records, "acked": x.acked, "acked_phase": x.acked_phase,
            "sent": x.sent, "sent_records": x.sent_records, "acked_records": x.acked_records}


def _show(g: Group, k: str) -> str:
    value = getattr(g, k) if k in ("distribution", "restore") else g.key.get(k)
    return repr(value)
