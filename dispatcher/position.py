"""Which file a session is in, where that file stands in its life, and waiting for it to change.

A session's current file goes through these states (:class:`FileState`):

- WAITING: no file yet; the start rule waits for the first one to appear.
- OPEN: being read; it may still grow (the DAQ may append to the newest file).
- FINAL: read once more, to its final length, after it was seen closed.
- GONE: deleted, or unreadable for good: nothing more comes from it.

The position also waits for growth: it polls the file every ``poll_interval``
and, when the file stays quiet, ever less often.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from . import remote
from .catalog import Catalog, NoFileError
from .clock import Clock, Waiter
from .protocol import MessageType
from .session_errors import SessionError
from .subscription import KeepUp
from .tail import FileGone, FileReader, TreeInfo, Unreadable, warn_once

log = logging.getLogger("dds.session")

#: a quiet file is polled every poll_interval for BACKOFF_AFTER polls, then ever less often,
#: down to once every IDLE_BACKOFF poll intervals (an idle child costs almost nothing)
BACKOFF_AFTER = 50
IDLE_BACKOFF = 5
#: how many polls an unreadable open file is retried before it is reported
UNREADABLE_POLLS = 200
#: the start rules that name no file
START_RULES = ("oldest", "current", "latest")


class FileState(enum.Enum):
    WAITING = "waiting"
    OPEN = "open"
    FINAL = "final"
    GONE = "gone"


class FilePosition:
    """The current file of one session and its reader.

    Args:
        catalog (Catalog): the data directory.
        clock (Clock): monotonic time, for deadlines.
        waiter (Waiter): pauses between polls; may raise SessionAbort.
        poll_interval (float): seconds between checks for growth while waiting.
        on_enter (callable): called with the file name each time the position moves to
            entry 0 of a file (the streams start again there).
    """

    def __init__(self, catalog: Catalog, clock: Clock, waiter: Waiter, poll_interval: float,
                 on_enter: Callable[[str], None]):
        self.catalog = catalog
        self.clock = clock
        self.waiter = waiter
        self.poll_interval = poll_interval
        self.on_enter = on_enter
        self.state = FileState.WAITING
        self.file: str | None = None
        self.reader: FileReader | None = None
        self.start_rule: str | None = None  # the start rule while WAITING for a first file
        self.read_failures = 0  # reads of the current file that failed since the last good one
        self._unreadable_polls = 0
        self._quiet_polls = 0  # polls since the current file last changed
        self._spare: FileReader | None = None  # opened by the subscribe checks; enter() reuses it

    # ------------------------------------------------------------------ where

    def is_open(self) -> bool:
        """Whether the current file is the open one (the newest)."""
        return self.catalog.is_open(self.file)

    def no_record_text(self) -> str:
        where = f"file {self.file}" if self.file else "an empty data directory"
        return f"no record passing the subscription in {where} before the timeout"

    def deadline(self, timeout: float) -> float:
        return self.clock.monotonic() + timeout

    # ------------------------------------------------------------------ moving

    def start(self, rule: str) -> None:
        """Enter the file the start rule names; with no file yet, wait for the first one."""
        if rule in START_RULES:
            files = self.catalog.files()
            if not files:
                self.start_rule = rule
                return
            self.start_rule = None
            self.enter(files[0] if rule == "oldest" else files[-1])
            return
        try:
            self.catalog.path(rule)
        except NoFileError as exc:
            raise SessionError(MessageType.NO_FILE, f"start: {exc}") from None
        self.enter(rule)

    def reset(self) -> None:
        """No file: the next subscription's start rule places the session (a group member leaving it)."""
        self._drop_reader()
        self.file = None
        self.state = FileState.WAITING

    def go_to(self, name: str) -> None:
        """Enter data file ``name``; SessionError NO_FILE if there is none."""
        try:
            self.catalog.path(name)
        except NoFileError as exc:
            raise SessionError(MessageType.NO_FILE, str(exc)) from None
        self.enter(name)

    def enter(self, name: str) -> None:
        """Position at entry 0 of file ``name``."""
        self._drop_reader()
        self.file = name
        self.read_failures = 0
        self._quiet_polls = 0
        self._unreadable_polls = 0
        self.start_rule = None
        spare, self._spare = self._spare, None
        listed = name in self.catalog.files()
        if spare is not None and spare.name == name and listed:
            self.reader = spare  # the subscribe checks just opened it (start="current" is the newest file)
        else:
            if spare is not None:
                spare.close()
            self.reader = FileReader(self.catalog.path(name)) if listed else None
        self.state = FileState.OPEN if self.reader is not None else FileState.GONE
        self.on_enter(name)
        self.refresh()
        self._judge_if_closed()
        log.debug("now at file %s", name)

    def _judge_if_closed(self) -> None:
        if self.reader is not None and not self.is_open():
            self.reader.warn_if_no_stream()

    def move_on(self, keep_up: KeepUp) -> bool:
        """The current file is exhausted: go to the next one if it is closed. False: wait."""
        if self.file is None:
            if self.start_rule and self.catalog.files():
                # every record of a file that appeared after subscribing is new: "latest" reads it all
                self.start("current" if self.start_rule == "latest" else self.start_rule)
                return True
            return False
        if self.reader is not None and self.is_open():
            return False
        if self.read_to_end_if_closed():
            return True
        if keep_up is KeepUp.FILE:
            newest = self.catalog.open_file()
            nxt = newest if newest is not None and newest > self.file else None
        else:
            nxt = self.catalog.next_after(self.file)
        if nxt is None:
            return False
        self.enter(nxt)
        return True

    # ------------------------------------------------------------------ the file's life

    def refresh(self, force: bool = False) -> bool:
        """Pick up growth of the current file; drop it if it vanished or cannot be read. True if it changed."""
        if self.reader is None:
            return False
        try:
            changed = self.reader.refresh(force)
            self._unreadable_polls = 0
            return changed
        except remote.Unavailable as exc:  # the XRootD server is away: wait for it, skip nothing
            log.debug("waiting for the XRootD server: %s", exc)
            return False
        except FileGone:
            log.warning("file %s disappeared; skipping it", self.file)
            self._drop_reader()
        except Unreadable as exc:
            # the DAQ may create the open file a moment before it writes to it: not a fault yet
            if not (self.is_open() and self.reader.is_empty()):
                self._unreadable_polls += 1
            if not self.is_open() or self._unreadable_polls >= UNREADABLE_POLLS:
                self._skipping(exc)
                self._drop_reader()
        return True

    def read_to_end_if_closed(self) -> bool:
        """The current file was just closed: read it once more, to its final length, before
        moving on or calling a stream missing from it. Forced: the last append may have left
        size and mtime unchanged (see tail.SETTLE_SECONDS). True if it did."""
        if self.state is not FileState.OPEN or self.is_open():
            return False
        self.state = FileState.FINAL
        self.refresh(force=True)
        self._judge_if_closed()
        return True

    def read_failed(self, stream: str, exc: Exception) -> None:
        """A read of ``stream`` failed: give the file up, unless it is the open one and may be mid-write."""
        if isinstance(exc, FileGone):
            log.warning("file %s disappeared while reading %s", self.file, stream)
            self._drop_reader()
            return
        if isinstance(exc, remote.Unavailable):  # not the file's fault: retried until the server is back
            log.debug("waiting for the XRootD server: %s", exc)
            return
        # The open file may be mid-write: retried on later polls, but not for ever.
        self.read_failures += 1
        if self.is_open() and self.read_failures < UNREADABLE_POLLS:
            log.log(logging.WARNING if self.read_failures == 1 else logging.DEBUG, "%s", exc)
            return
        self._skipping(exc)
        self._drop_reader()

    def wait(self, deadline: float, what: str) -> None:
        """Pause one poll (SessionError TIMEOUT, saying ``what``, once past ``deadline``), then look for growth."""
        now = self.clock.monotonic()
        if now >= deadline:
            raise SessionError(MessageType.TIMEOUT, what)
        # A file that stays quiet is looked at less often, up to IDLE_BACKOFF times the interval.
        interval = self.poll_interval * min(IDLE_BACKOFF, 1 + self._quiet_polls // BACKOFF_AFTER)
        self._quiet_polls += 1
        self.waiter.wait(min(interval, deadline - now))
        if self.state is FileState.OPEN and self.refresh():
            self._quiet_polls = 0

    def _skipping(self, exc: Exception) -> None:
        path = self.reader.path if self.reader is not None else str(self.file)
        warn_once(path, "unreadable", "skipping unreadable file %s: %s", self.file, exc, logger=log)

    def check(self, deadline: float, what: str) -> None:
        """Between the steps of a long request: SessionError TIMEOUT (saying ``what``) once past
        ``deadline``; the waiter's checks (client gone, stop, parent gone) without pausing."""
        if self.clock.monotonic() >= deadline:
            raise SessionError(MessageType.TIMEOUT, what)
        self.waiter.wait(0)

    def _drop_reader(self) -> None:
        """Close the current file now: a deleted file's space is freed only when no one holds it open."""
        if self.reader is not None:
            self.reader.close()
            self.reader = None
            self.state = FileState.GONE

    # ------------------------------------------------------------------ looking ahead

    def find_trees(self, streams: list[str], files: list[str]) -> dict[str, TreeInfo | None]:
        """What the current file, else the newest file that has it, shows of each stream (None: no file has it).

        Each of the newest three files is opened at most once per call, however many
        streams are asked for (a subscription naming many streams no file has stays cheap).
        """
        found: dict[str, TreeInfo | None] = {}
        readers: list[FileReader] = []
        wanted = []
        for stream in streams:
            if self.reader is not None and stream in self.reader.trees:
                found[stream] = self.reader.trees[stream]
            else:
                found[stream] = None
                wanted.append(stream)
        for name in reversed(files[-3:]) if wanted else ():
            if self._spare is not None and self._spare.name == name:
                r = self._spare
            else:
                r = FileReader(self.catalog.path(name))
                try:
                    r.refresh()
                except (FileGone, Unreadable, remote.Unavailable):  # try the next file
                    r.close()
                    continue
                readers.append(r)
            for stream in wanted:
                if found[stream] is None and stream in r.trees:
                    found[stream] = r.trees[stream]
            if all(found[s] is not None for s in wanted):
                break
        for r in readers:
            if self.reader is None and r.name == files[-1] and self._spare is None:
                self._spare = r  # keep it open: the first subscription usually starts in it
            else:
                r.close()
        return found

    def drop_spare(self) -> None:
        if self._spare is not None:
            self._spare.close()
            self._spare = None

    def close(self) -> None:
        self.drop_spare()
        if self.reader is not None:
            self.reader.close()
