"""One client's session: its subscription, its position, and what to serve next.

The session is the only place that knows the catalog (which files), the tailer
(what is in them), the selection (what passes) and the keep-up mode (what comes
next). It does no socket I/O and reads no time itself: it is given a clock and
a *waiter* whose ``wait(s)`` pauses (in the child: while watching the client and
the signals) and raises :class:`SessionAbort` when the session must end.

It is a facade over parts with one job each:

- ``position``: the current file and its lifecycle (waiting, open, final, gone).
- ``reader``: the subscribed streams: cut, prescale, chunks, what waits to be served.
- ``inorder``, ``newest``, ``synced``: what comes next in keep-up ``all``/``file``,
  in ``record`` mode, and with ``sync``.

A new subscription rewinds each stream to just after the last record served,
so it applies from the current position.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, TypeVar

from . import logsetup
from .catalog import Catalog
from .clock import Clock, SystemClock, Waiter
from .columnar import Part
from .freshness import LaterFiles, annotate
from .groupmember import GroupMember
from .inorder import InOrder
from .layouts import OrderLayout, SetsLayout, SyncBatchLayout
from .newest import Newest
from .position import FilePosition
from .protocol import MessageType
from .reader import StreamCursor, StreamReader, check_stream
from .session_errors import SessionAbort, SessionError
from .subscription import KeepUp, Subscription
from .synced import Synced

if TYPE_CHECKING:
    from .grouplink import ChildLink

__all__ = ["Session", "SessionAbort", "SessionError"]

log = logging.getLogger("dds.session")

T = TypeVar("T")

#: records read ahead between requests, per stream, at most
READ_AHEAD = 100_000
#: seconds a group member's server holds records it read ahead while its client does not ask
AHEAD_HOLD = 1.0
#: record sets skipped one by one (record mode, sync) between checks of the deadline and the client
SKIP_CHECK = 256


class Session:
    """Serve one client.

    Args:
        catalog (Catalog): the data directory.
        waiter (Waiter): ``wait(seconds)`` pauses; raises SessionAbort to end the session.
        poll_interval (float): seconds between checks for growth while waiting; default 0.01.
        clock (Clock): monotonic time for timeouts and sync delays; default the system's.
        group_link (ChildLink or None): the line to the parent's group ledger; None: no groups.
    """

    def __init__(self, catalog: Catalog, waiter: Waiter, *, poll_interval: float = 0.01, clock: Clock | None = None,
                 group_link: ChildLink | None = None):
        self.catalog = catalog
        self.position = FilePosition(catalog, clock or SystemClock(), waiter, poll_interval, self._entered)
        self.reader = StreamReader(self.position)
        self.inorder = InOrder(self.position, self.reader)
        self.newest = Newest(self.position, self.reader)
        self.synced = Synced(self.position, self.reader)
        self.later = LaterFiles(catalog)  # records in the files after the current one (lag)
        self._unserved: dict[str, dict[str, str]] = {}  # what the subscribe checks found the streams cannot serve
        self.group_link = group_link
        self.member: GroupMember | None = None  # serving a group subscription

    @property
    def sub(self) -> Subscription | None:
        return self.reader.sub

    @property
    def file(self) -> str | None:
        return self.position.file

    def _need_subscription(self) -> Subscription:
        return self.reader.subscription  # SessionError BAD_SUBSCRIPTION before the first subscribe

    def _entered(self, name: str) -> None:
        self.reader.seek_all(0)

    # ------------------------------------------------------------------ requests

    def subscribe(self, sub: Subscription) -> dict:
        self.inorder.forget()
        try:
            return self._subscribe(sub)
        finally:
            self.position.drop_spare()  # a reader the checks opened and the start did not take

    def _subscribe(self, sub: Subscription) -> dict:
        self._check_against_files(sub)
        self.newest.skipped.clear()  # skips count from the new subscription on
        if sub.group is not None:
            return self._join(sub)
        if self.member is not None:  # a member subscribing on its own: it leaves the group, and starts afresh
            self.leave("", {})
            self.position.reset()
        old = self.reader.streams
        if self.position.file is None:
            self.reader.use(sub, {s: StreamCursor() for s in sub.streams})
            try:
                self.position.start(sub.start)
            except SessionError:
                self.reader.use(None, old)  # a refused first subscription leaves none
                raise
            if sub.start == "latest":
                self.reader.seek_to_end()
        else:
            # From the current position: rewind what was read ahead but not served.
            # The new cut starts its own prescale count.
            self.reader.use(sub, {s: StreamCursor(old[s].served if s in old else 0) for s in sub.streams})
        reply: dict = {"file": self.position.file}
        if self._unserved:
            reply["unserved"] = self._unserved
        return reply

    def _join(self, sub: Subscription) -> dict:
        if self.group_link is None:
            raise SessionError(MessageType.BAD_SUBSCRIPTION, "this server serves no groups now (no line to its ledger)")
        if self.member is not None:
            self.member.drop_ahead()  # read for the old subscription
        old = (self.reader.sub, self.reader.streams)
        self.reader.use(sub, {s: StreamCursor() for s in sub.streams})
        member = GroupMember(self, self.group_link, sub)
        try:
            info = member.join()
        except SessionError:
            self.reader.use(*old)  # refused: the old subscription stands
            raise
        self.member = member
        reply: dict = {"file": info.get("file"), "group": info}
        if self._unserved:
            reply["unserved"] = self._unserved
        return reply

    def leave(self, file: str, consumed: dict) -> dict:
        """The client closes cleanly: a group member gives back what it did not use and leaves."""
        if self.member is not None:
            member, self.member = self.member, None
            member.leave(file, consumed)
        return {}

    def next(
        self, timeout: float, advance_by: int = 1, prefetch: int = 1
    ) -> tuple[list[Part], SetsLayout | OrderLayout]:
        """The next record set (after skipping ``advance_by - 1``), and up to ``prefetch - 1`` more ready now.

        Returns (parts, layout): a :class:`SetsLayout` in ``record`` mode and with
        ``sync``, else an :class:`OrderLayout` (prefetched single-record sets).
        """
        self.inorder.forget()
        sub = self._need_subscription()
        deadline = self.position.deadline(timeout)
        if self.member is not None:
            skip = advance_by - 1
            while skip > 0:  # the records skipped count as handed to this member
                skip -= len(self.member.next_part(deadline, skip).entries)
            part = self.member.next_part(deadline, prefetch)
            return self.fresh(([part], OrderLayout((0,) * len(part.entries))))
        if sub.keep_up is KeepUp.RECORD or sub.sync:
            one = self.newest.next_set if sub.keep_up is KeepUp.RECORD else self.synced.next_set
            for i in range(1, advance_by):
                one(deadline)
                if i % SKIP_CHECK == 0:  # a long skip watches the deadline, the client and a stop
                    self.position.check(deadline, f"skipped {i} of {advance_by - 1} record sets before the timeout")
            return self.fresh(one(deadline))
        return self.fresh(self.inorder.next(deadline, advance_by, prefetch))

    def rewind(self, file: str, consumed: dict) -> dict:
        """The client used only ``consumed[stream]`` records of the last prefetched reply (see InOrder.rewind)."""
        try:
            self._need_subscription()
        except SessionError:
            self.inorder.forget()
            raise
        if self.member is not None:
            self.member.give_back(file, consumed)
            return {"file": file}
        self.inorder.rewind(file, consumed)
        return {"file": self.position.file}

    def next_batch(self, max_records: int, timeout: float) -> tuple[list[Part], SyncBatchLayout | None]:
        """Up to ``max_records`` records of one stream from one file (with ``sync``: synced sets)."""
        self.inorder.forget()
        sub = self._need_subscription()
        deadline = self.position.deadline(timeout)
        if self.member is not None:
            return self.fresh(([self.member.next_part(deadline, max_records)], None))
        if sub.keep_up is KeepUp.RECORD:
            return self.fresh((self.newest.batch(deadline, max_records), None))
        if sub.sync:
            return self.fresh(self.synced.batch(deadline, max_records))
        return self.fresh((self.inorder.batch(deadline, max_records), None))

    def fresh(self, reply: tuple[list[Part], T]) -> tuple[list[Part], T]:
        """A reply with the freshness of each part filled in (lag, age; skipped in record mode)."""
        sub = self.reader.sub
        skipped = self.newest.skipped if sub is not None and sub.keep_up is KeepUp.RECORD else None
        annotate(reply[0], self.position, self.later, skipped)
        return reply

    def read_ahead(self) -> bool:
        """Between requests: read one chunk of what the next request will want. False: nothing to do.

        Bounded: at most READ_AHEAD records wait per stream. Only in ``all`` and
        ``file`` modes (``record`` mode wants what is newest when it is asked).
        """
        if self.member is not None:
            try:
                return self.member.read_ahead()
            except SessionError:  # e.g. a cut that does not fit this file: the request will say so
                return False
            except Exception:
                logsetup.bug(log, "error reading ahead for group %s", self.member.sub.group)
                return False
        sub = self.reader.sub
        if sub is None or sub.keep_up is KeepUp.RECORD:
            return False
        return self.read_chunk_ahead(READ_AHEAD)

    def read_chunk_ahead(self, most: int, want: int = 1) -> bool:
        """Read one chunk (of ``want`` records or more) of the first stream with fewer than ``most``
        records waiting. False: nothing to read now, or an error the next request meets again."""
        if self.position.reader is None:
            return False
        for s, st in self.reader.streams.items():
            if st.pending_count() < most:
                try:
                    if self.reader.read_chunk(s, want):
                        return True
                except SessionError:  # e.g. a cut that does not fit this file: the request will say so
                    return False
                except Exception:  # a bug must cost at most an answer (the request meets it again), not the session
                    logsetup.bug(log, "error reading ahead in stream %s", s)
                    return False
        return False

    def _not_member(self) -> None:
        if self.member is not None:
            raise SessionError(MessageType.BAD_SUBSCRIPTION, f"a member of group {self.member.sub.group!r} cannot "
                               "move: the group keeps its place (subscribe without group= to move on your own)")

    def idle_tick(self, waited: float) -> None:
        """The client has been quiet for ``waited`` seconds: a group member no longer holds records read
        ahead for it after AHEAD_HOLD seconds (the other members may take them)."""
        if self.member is not None and waited >= AHEAD_HOLD:
            try:
                self.member.drop_ahead()
            except Exception:  # the line to the ledger is gone: the request will say so
                logsetup.bug(log, "error giving back what was read ahead for group %s", self.member.sub.group)

    def go_to_file(self, name: str) -> dict:
        self._not_member()
        self.inorder.forget()
        self.position.go_to(name)
        return {"file": name}

    def go_to_next_file(self, timeout: float) -> dict:
        self._not_member()
        self.inorder.forget()
        deadline = self.position.deadline(timeout)
        while True:
            nxt = self.catalog.next_after(self.position.file)
            if nxt is not None:
                self.position.enter(nxt)
                return {"file": nxt}
            self.position.wait(deadline, f"no file after {self.position.file} within {timeout:g} s")

    def close(self) -> None:
        self.position.close()

    # ------------------------------------------------------------------ checks

    def _check_against_files(self, sub: Subscription) -> None:
        """Reject, at subscribe time, what the newest file that has a stream shows is wrong."""
        files = self.catalog.files()
        self._unserved.clear()
        for stream, info in self.position.find_trees(list(sub.streams), files).items():
            if info is not None:
                check_stream(sub, stream, info)
                wanted = sub.branches_for(stream)
                lost = {b: why for b, why in info.unserved.items() if wanted is None or b in wanted}
                if lost:
                    self._unserved[stream] = lost
