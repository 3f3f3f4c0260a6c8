"""A session that is a member of a group: it serves the ranges the parent's ledger leases to it.

The member never decides where it is: it asks the ledger (``take``) and gets
either a lease (a range of one stream's entries in one file) or the file the
group is in, to look at. Looking means reading the file's entry counts, and,
once the file is closed, its final ones and the name of the next file; the
member tells the ledger what it saw (and where the baskets end, so leases end
there too) with its next ``take``. A lease is read with the session's own
stream reader (cut, prescale from the lease's phase) and counted to the ledger
before anything is sent; its records go out in replies of at most what the
client asks for, each told to the ledger (``sent``) before it goes. The client
asking again acknowledges what it was sent; its ``Rewind`` or ``Leave`` give
back what it did not hand to the user. Between requests the member reads its
next lease ahead, and gives it back when its client stays quiet.
"""

from __future__ import annotations

import bisect
import logging
from typing import TYPE_CHECKING

from .columnar import Part
from .groups import MAX_LEASE, GroupError, group_key
from .position import START_RULES, FileState
from .protocol import MessageType
from .reader import CHUNK_ENTRIES, MAX_REPLY_BYTES, fitting
from .session_errors import SessionError
from .subscription import Subscription
from .tail import FileGone, FileReader, Unreadable

if TYPE_CHECKING:
    from .grouplink import ChildLink
    from .session import Session

log = logging.getLogger("dds.session")

#: a lease covers at most this many times the records asked for (a cut passes only some of them)
WIDEN = 16
#: basket boundaries told to the ledger: up to this many leases' worth ahead of the frontier ...
EDGE_WINDOW = 8
#: ... and at most this many per stream
MAX_SENT_EDGES = 64


class Held:
    """A lease this member read: its records, and how many of them were sent."""

    __slots__ = ("id", "lease", "part", "stop", "pos", "redelivered")

    def __init__(self, lease: dict, part: Part, stop: int):
        self.id = int(lease["id"])
        self.lease = lease
        self.part = part
        self.stop = stop  # the lease's end (where reading stopped, if that was earlier)
        self.pos = 0
        self.redelivered = bool(lease.get("redelivered"))

    def left(self) -> int:
        return len(self.part.entries) - self.pos

    def next_entry(self) -> tuple[int, int]:
        """Where what was not sent starts, and its phase: the lease's start before anything was sent, else
        the next record (kept by the prescale: phase 0)."""
        if self.pos == 0:
            return int(self.lease["start"]), int(self.lease["phase"])
        return int(self.part.entries[self.pos]), 0


class GroupMember:
    """The group side of one session.

    Args:
        session (Session): the session (its position, stream reader and freshness).
        link (ChildLink): the line to the parent's ledger.
        sub (Subscription): the group subscription.
    """

    def __init__(self, session: Session, link: ChildLink, sub: Subscription):
        self.session = session
        self.link = link
        self.sub = sub
        self.view: dict | None = None  # what this member saw last of the group's file
        self.frontier: dict[str, int] = {}  # the group's frontier, as the ledger said last
        self.last: tuple[int, Part] | None = None  # (lease id, records) of the last reply
        self.current: Held | None = None  # the lease being sent, with its records not sent yet
        self.pass_rate: dict[str, float] = {}  # per stream: records per entry of the last lease
        self.asked: int | None = None  # the records the client asked for last

    def join(self) -> dict:
        sub = self.sub
        assert sub.group is not None
        try:
            return self.link.ask(op="join", group=sub.group, key=group_key(sub.to_dict()),
                                 distribution=sub.distribution, restore=sub.restore, start=sub.start,
                                 place=self._place())
        except GroupError as exc:
            raise SessionError(MessageType.BAD_SUBSCRIPTION, str(exc)) from None

    def _place(self) -> dict | None:
        """Where this subscription's start puts a group it makes (None: no file yet)."""
        catalog = self.session.catalog
        files = catalog.files()
        rule = self.sub.start
        if rule not in START_RULES:
            catalog.path(rule)  # NO_FILE was checked at subscribe; a file deleted since fails here too
            return {"file": rule, "entries": {}}
        if not files:
            return None
        if rule == "oldest":
            return {"file": files[0], "entries": {}}
        if rule == "current":
            return {"file": files[-1], "entries": {}}
        reader = FileReader(catalog.path(files[-1]))  # "latest": only what comes after now
        try:
            reader.refresh()
            return {"file": files[-1],
                    "entries": {s: reader.trees[s].num_entries for s in self.sub.streams if s in reader.trees}}
        except (FileGone, Unreadable):
            return {"file": files[-1], "entries": {}}
        finally:
            reader.close()

    def give_back(self, file: str, consumed: dict) -> None:
        """Of the last reply, the client handed only ``consumed[stream]`` records to the user: the rest,
        and what of that lease was not sent yet, goes back to the group (first to whoever asks next), not
        marked redelivered."""
        last, self.last = self.last, None
        if last is None or not file:
            return
        lease_id, part = last
        k = consumed.get(part.stream, 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise SessionError(MessageType.BAD_SUBSCRIPTION, f"consumed must map streams to counts, not {consumed!r}")
        if k < len(part.entries):
            held = self.current if self.current is not None and self.current.id == lease_id else None
            unsent = held.left() if held is not None else 0
            self._release(lease_id, int(part.entries[k]), 0, len(part.entries) - k + unsent, len(part.entries) - k)
            if held is not None:
                self.current = None

    def drop_ahead(self) -> None:
        """What was read and not sent goes back to the group, unmarked."""
        held, self.current = self.current, None
        if held is not None and held.left():
            entry, phase = held.next_entry()
            self._release(held.id, entry, phase, held.left(), 0)

    def leave(self, file: str, consumed: dict) -> None:
        """The client closes cleanly: give back what it did not use, then leave the group."""
        self.give_back(file, consumed)
        self.drop_ahead()
        self.link.tell(op="leave")

    def _release(self, lease_id: int, entry: int, phase: int, records: int, sent: int) -> None:
        self.link.tell(op="release", id=lease_id, entry=entry, phase=phase, records=records, sent=sent)

    # ------------------------------------------------------------------ serving

    def next_part(self, deadline: float, max_records: int) -> Part:
        """The next passing records leased to this member: up to ``max_records`` of one stream, one file."""
        self.last = None
        self.asked = max_records
        if self.current is not None:  # read before: the rest of a lease, or one read while the client was busy
            self.link.tell(op="ack")  # the client asked again: what it was sent is acknowledged
            return self._send(max_records)
        position = self.session.position
        while True:
            answer = self._take(self._want(max_records), ack=True)
            lease = answer.get("lease")
            if lease is None:
                before = self.view
                self._look(answer.get("look"), answer.get("start"))
                if self.view == before:  # nothing new: wait a poll (TIMEOUT past the deadline)
                    position.wait(deadline, f"no record for group {self.sub.group!r} before the timeout")
                continue
            if self._cut(lease):
                return self._send(max_records)
            position.check(deadline, f"no record for group {self.sub.group!r} before the timeout")

    def read_ahead(self) -> bool:
        """Between requests: take and read the next lease, if one is there now (acknowledging nothing: the
        client has not asked yet). False: nothing to do."""
        if self.current is not None or self.asked is None or self.sub.distribution != "balanced":
            return False  # roundrobin: a member takes its turn when its client asks
        answer = self._take(self._want(self.asked), ack=False)
        lease = answer.get("lease")
        if lease is None:
            return False
        self._cut(lease)
        return True

    def _take(self, want: int, ack: bool) -> dict:
        view = self.view
        if view is not None and view.get("file") is not None:
            view = dict(view, edges=self._edges(view["file"], want))
        try:
            answer = self.link.ask(op="take", want=want, view=view, ack=ack)
        except GroupError as exc:
            raise SessionError(MessageType.SERVER_ERROR, str(exc)) from None
        self.frontier = answer.get("entries") or {}
        return answer

    def _edges(self, file: str, want: int) -> dict[str, list[int]]:
        """Per stream, basket boundaries of ``file`` a little ahead of the group's frontier (none when the
        file is not the one open here)."""
        position = self.session.position
        reader = position.reader
        if reader is None or position.file != file:
            return {}
        out = {}
        for s in self.sub.streams:
            if s not in reader.trees:
                continue
            lo = self.frontier.get(s, 0)
            offsets = reader.offsets(s)
            i = bisect.bisect_right(offsets, lo)
            kept: list[int] = []
            for e in offsets[i:]:
                if e > lo + EDGE_WINDOW * want or len(kept) >= MAX_SENT_EDGES:
                    break
                if not kept or e - kept[-1] >= want // 4:
                    kept.append(int(e))
            out[s] = kept
        return out

    def _look(self, file: str | None, rule: str | None) -> None:
        """Look at the group's file (or, with none yet, at the file the start rule names)."""
        position = self.session.position
        catalog = self.session.catalog
        if file is None:
            files = catalog.files()
            if files:
                self.view = {"file": files[0] if rule == "oldest" else files[-1], "counts": {}, "final": False,
                             "next": None}
            return
        if position.file != file:
            position.enter(file)
        else:
            position.refresh()
        if position.reader is not None and not position.is_open():
            position.read_to_end_if_closed()
        reader = position.reader
        final = reader is None or position.state is FileState.FINAL
        counts = {s: reader.trees[s].num_entries for s in self.sub.streams if s in reader.trees} if reader else {}
        self.view = {"file": file, "counts": counts, "final": final,
                     "next": catalog.next_after(file) if final else None}

    def _cut(self, lease: dict) -> bool:
        """Read one lease, apply cut and prescale, count it to the ledger, and hold its records to send.
        False: none passed."""
        lease_id, file, stream = int(lease["id"]), str(lease["file"]), str(lease["stream"])
        start, stop, phase = int(lease["start"]), int(lease["stop"]), int(lease["phase"])
        got, passed = self._read(file, stream, start, stop, phase)
        n = len(got.entries) if got is not None else 0
        self.pass_rate[stream] = n / max(1, stop - start)
        self.link.tell(op="counted", id=lease_id, passed=passed, records=n)
        cursor = self.session.reader.streams[stream].cursor
        if cursor < stop:  # what could not be read now goes back, from where the reading stopped
            self._release(lease_id, cursor, (phase + passed) % self.sub.prescale, 0, 0)
            stop = cursor
        if got is None or not n:
            return False
        self.current = Held(lease, got, stop)
        return True

    def _send(self, max_records: int) -> Part:
        """The next reply from the lease held: at most ``max_records`` records and MAX_REPLY_BYTES."""
        held = self.current
        assert held is not None
        part, pos = held.part, held.pos
        rest = part.arrays[pos:] if pos else part.arrays
        k = min(max_records, fitting(rest, MAX_REPLY_BYTES), len(part.entries) - pos)
        out = Part(part.stream, part.file, part.entries[pos : pos + k], rest[:k], part.unserved)
        held.pos += k
        until = held.next_entry()[0] if held.left() else held.stop
        self.link.tell(op="sent", id=held.id, until=until, records=k)
        if not held.left():
            self.current = None
        out.redelivered = held.redelivered
        self.last = (held.id, out)
        return out

    def _read(self, file: str, stream: str, start: int, stop: int, phase: int) -> tuple[Part | None, int]:
        """The records of ``stream`` in ``[start, stop)`` of ``file`` that pass the cut and prescale,
        and how many passed the cut."""
        position = self.session.position
        reader = self.session.reader
        if position.file != file:
            position.enter(file)
        st = reader.streams[stream]
        st.rewind(start, phase)
        if position.reader is None:
            log.warning("group %s: file %s is gone: entries %d to %d of stream %s cannot be served",
                        self.sub.group, file, start, stop, stream)
            st.cursor = stop  # nothing more will come of it
            return None, 0
        n = reader.num_entries(stream) or 0
        if n < stop:  # leased by what another member saw: this one's view may be older
            position.refresh(force=True)
            n = reader.num_entries(stream) or 0
        if n < stop:
            log.warning("group %s: stream %s of file %s has %d entries, not the %d a member saw: entries %d to %d "
                        "are not served", self.sub.group, stream, file, n, stop, max(n, start), stop)
            stop = max(start, n)
        st.chunk = CHUNK_ENTRIES
        while st.cursor < stop and reader.read_chunk(stream, want=stop - st.cursor, limit=stop):
            pass
        if st.cursor < stop and position.reader is None:
            log.warning("group %s: file %s went away while being read: entries %d to %d of stream %s cannot be "
                        "served", self.sub.group, file, st.cursor, stop, stream)
            st.cursor = stop
        passed = st.passed - phase
        if not st.pending:
            return None, passed
        part, _ = reader.take_ks(stream, MAX_LEASE)
        return part, passed

    def _want(self, records: int) -> int:
        """Entries to ask for, so that a cut still leaves about ``records`` records."""
        rate = min(self.pass_rate.values()) if self.pass_rate else 1.0
        return max(1, min(MAX_LEASE, records * WIDEN, int(records / max(rate, 1.0 / WIDEN))))
