"""A session that is a member of a group: it serves the ranges the parent's ledger leases to it.

The member never decides where it is: it asks the ledger (``take``) and gets
either a lease (a range of one stream's entries in one file) or the file the
group is in, to look at. Looking means reading the file's entry counts, and,
once the file is closed, its final ones and the name of the next file; the
member tells the ledger what it saw with its next ``take``. A lease is read
with the session's own stream reader (cut, prescale from the lease's phase),
counted to the ledger before anything is sent, and sent as one part. Asking
again acknowledges it; the client's ``Rewind`` or ``Leave`` give back what it
did not hand to the user.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

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
        self.last: tuple[int, Part, int] | None = None  # (lease id, part, phase) of the last reply
        self.pass_rate: dict[str, float] = {}  # per stream: records per entry of the last lease

    # ------------------------------------------------------------------ joining and leaving

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
        """Of the last reply, the client handed only ``consumed[stream]`` records to the user: the rest
        goes back to the group (first to whoever asks next), not marked redelivered."""
        last, self.last = self.last, None
        if last is None or not file:
            return
        lease_id, part, _ = last
        k = consumed.get(part.stream, 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise SessionError(MessageType.BAD_SUBSCRIPTION, f"consumed must map streams to counts, not {consumed!r}")
        if k < len(part.entries):
            self.link.tell(op="release", id=lease_id, entry=int(part.entries[k]), phase=0,
                           unsent=len(part.entries) - k)

    def leave(self, file: str, consumed: dict) -> None:
        """The client closes cleanly: give back what it did not use, then leave the group."""
        self.give_back(file, consumed)
        self.link.tell(op="leave")

    # ------------------------------------------------------------------ serving

    def next_part(self, deadline: float, max_records: int) -> Part:
        """The next passing records leased to this member: up to ``max_records`` of one stream, one file."""
        self.last = None
        position = self.session.position
        while True:
            answer = self._take(self._want(max_records))
            lease = answer.get("lease")
            if lease is None:
                before = self.view
                self._look(answer.get("look"), answer.get("start"))
                if self.view == before:  # nothing new: wait a poll (TIMEOUT past the deadline)
                    position.wait(deadline, f"no record for group {self.sub.group!r} before the timeout")
                continue
            part = self._serve(lease, max_records)
            if part is not None:
                return part
            position.check(deadline, f"no record for group {self.sub.group!r} before the timeout")

    def _take(self, want: int) -> dict:
        try:
            return self.link.ask(op="take", want=want, view=self.view)
        except GroupError as exc:
            raise SessionError(MessageType.SERVER_ERROR, str(exc)) from None

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

    def _serve(self, lease: dict, max_records: int) -> Part | None:
        """Read, cut and count one lease; the part to send (None: nothing of it passed)."""
        lease_id, file, stream = int(lease["id"]), str(lease["file"]), str(lease["stream"])
        start, stop, phase = int(lease["start"]), int(lease["stop"]), int(lease["phase"])
        reader = self.session.reader
        got, passed = self._read(file, stream, start, stop, phase)
        entries = got.entries if got is not None else np.empty(0, dtype=np.int64)
        n = len(entries)
        self.pass_rate[stream] = n / max(1, stop - start)
        self.link.tell(op="counted", id=lease_id, passed=passed, records=n)
        st = reader.streams[stream]
        k = min(max_records, fitting(got.arrays, MAX_REPLY_BYTES)) if got is not None and n else 0
        if k < n:  # the rest goes back, first to whoever asks next (maybe this member)
            self.link.tell(op="release", id=lease_id, entry=int(entries[k]), phase=0, unsent=n - k)
            assert got is not None
            got = Part(got.stream, got.file, entries[:k], got.arrays[:k], got.unserved)
        elif st.cursor < stop:  # what could not be read now goes back, from where the reading stopped
            self.link.tell(op="release", id=lease_id, entry=st.cursor, phase=(phase + passed) % self.sub.prescale,
                           unsent=0)
        if got is None or not n:
            return None
        got.redelivered = bool(lease.get("redelivered"))
        self.last = (lease_id, got, phase)
        return got

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
        if st.cursor < stop and position.reader is None:  # the file went away while being read
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
