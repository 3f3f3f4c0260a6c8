"""One client's session: its subscription, its position, and what to serve next.

The session is the only place that knows the catalog (which files), the tailer
(what is in them), the selection (what passes) and the keep-up mode (what comes
next). It does no socket I/O: the child hands it a *waiter* whose ``wait(s)``
sleeps while watching the client and the signals, and raises
:class:`SessionAbort` when the session must end.

Position: the current file, and per stream the next entry to read (``cursor``).
Records read and passing the cut but not yet served wait in ``pending``; a new
subscription rewinds each stream to just after the last record served, so it
applies from the current position.
"""

from __future__ import annotations

import collections
import difflib
import logging
import time

import awkward as ak
import numpy as np

from .catalog import Catalog, NoFileError
from .columnar import Part
from .protocol import MessageType
from .selection import SelectionError, compile_selection
from .subscription import KeepUp, Subscription
from .tail import FileGone, FileReader, Unreadable

log = logging.getLogger("dds.session")

#: entries read per chunk (aligned up to a basket boundary when one is near)
CHUNK_ENTRIES = 50_000
#: the first chunk of a stream: a DAQ file has one small basket per append (~10 records), and
#: uproot pays ~50 us per basket, so a first record is fast only if the first read is short
#: (the client's default prefetch of 256 sets is read anyway)
FIRST_CHUNK = 256
#: a quiet file is polled every poll_interval for BACKOFF_AFTER polls, then ever less often,
#: down to once every IDLE_BACKOFF poll intervals (an idle child costs almost nothing)
BACKOFF_AFTER = 50
IDLE_BACKOFF = 5
#: synced sets per batch at most (each set's row numbers travel in the JSON header)
MAX_SYNC_BATCH = 100_000
#: records read ahead between requests, per stream, at most
READ_AHEAD = 100_000
#: how many polls an unreadable open file is retried before it is reported
UNREADABLE_POLLS = 200


class SessionError(Exception):
    """A request failed; the session goes on."""

    def __init__(self, message_type: MessageType, message: str):
        super().__init__(message)
        self.message_type = message_type


class SessionAbort(Exception):
    """The session must end now (client gone, server stopping, parent dead)."""


def _suggest(name: str, choices) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return f"{hint}(branches: {', '.join(sorted(choices))})"


def _compile(text: str, stream: str, kinds: dict):
    try:
        return compile_selection(text, stream, kinds)
    except SelectionError as exc:
        raise SessionError(MessageType.BAD_SELECTION, str(exc)) from None


def _no_fields(n: int) -> ak.Array:
    """``n`` records without fields (``arrays[[]]`` would select no records, not no fields)."""
    return ak.Array(ak.contents.RecordArray([], [], length=n))


class _Chunk:
    """Records of one read that passed the cut (and prescale), not yet served from ``pos`` on."""

    __slots__ = ("entries", "arrays", "pos", "ks")

    def __init__(self, entries, arrays, ks):
        self.entries = entries
        self.arrays = arrays
        self.ks = ks  # each record's index among the stream's passing records (prescale phase)
        self.pos = 0


class _Stream:
    """One stream's position in the current file.

    ``served`` is just after the last record served (what a new cut starts from),
    ``cursor`` just after the last entry read; in between, ``pending`` holds the
    records that passed the cut. ``passed``/``served_passed`` count the records
    that passed the cut before ``cursor``/``served`` (the prescale phase).
    """

    __slots__ = ("cursor", "pending", "passed", "chunk", "served", "served_passed")

    def __init__(self, cursor: int = 0):
        self.chunk = FIRST_CHUNK  # grows to CHUNK_ENTRIES: a first record comes fast, bulk reads are big
        self.pending = collections.deque()  # of _Chunk
        self.passed = self.served_passed = 0
        self.cursor = self.served = cursor

    def seek(self, entry: int) -> None:
        """Continue at ``entry``; the prescale phase carries on."""
        self.rewind(entry, self.passed)

    def pending_count(self) -> int:
        return sum(len(c.entries) - c.pos for c in self.pending)

    def head_entry(self) -> int | None:
        if not self.pending:
            return None
        c = self.pending[0]
        return int(c.entries[c.pos])

    def rewind(self, entry: int, passed: int) -> None:
        """Read again from ``entry``, before which ``passed`` records passed the cut."""
        self.cursor = self.served = entry
        self.passed = self.served_passed = passed
        self.pending.clear()

    def rewind_unserved(self) -> None:
        """Forget what was read ahead: read again from just after the last record served."""
        self.rewind(self.served, self.served_passed)


class Session:
    """Serve one client.

    Args:
        catalog (Catalog): the data directory.
        waiter: object with ``wait(seconds)``; raises SessionAbort to end the session.
        poll_interval (float): seconds between checks for growth while waiting; default 0.01.
    """

    def __init__(self, catalog: Catalog, waiter, *, poll_interval: float = 0.01):
        self.catalog = catalog
        self.waiter = waiter
        self.poll_interval = poll_interval
        self.sub: Subscription | None = None
        self.file: str | None = None
        self.reader: FileReader | None = None
        self.final = False  # the current file was re-read after it was seen closed
        self.unreadable_polls = 0
        self.read_failures = 0  # reads of the current file that failed since the last good one
        self.streams: dict[str, _Stream] = {}
        self._selections: dict = {}
        self._start_pending: str | None = None  # start rule waiting for the first file
        self._rr = 0  # round robin over streams in record mode
        self._spare: FileReader | None = None  # opened by the subscribe checks; _enter reuses it
        self._sent: dict = {}  # stream -> (entries, prescale indices) of the last prefetched reply
        self._dir_trouble = False  # the data directory could not be listed last time
        self._quiet_polls = 0  # polls since the current file last changed

    # ------------------------------------------------------------------ requests

    def subscribe(self, sub: Subscription) -> dict:
        try:
            return self._subscribe(sub)
        finally:
            self._drop_spare()  # a reader the checks opened and the start did not take

    def _subscribe(self, sub: Subscription) -> dict:
        self._check_against_files(sub)
        old = self.streams
        self.sub = sub
        self._selections = {}
        if self.file is None:
            self.streams = {s: _Stream() for s in sub.streams}
            try:
                self._start(sub.start)
            except SessionError:
                self.sub, self.streams = None, old  # a refused first subscription leaves none
                raise
        else:
            # From the current position: rewind what was read ahead but not served.
            # The new cut starts its own prescale count.
            self.streams = {s: _Stream(old[s].served if s in old else 0) for s in sub.streams}
        return {"file": self.file}

    def next(self, timeout: float, advance_by: int = 1, prefetch: int = 1) -> tuple[list[Part], dict]:
        """The next record set, and up to ``prefetch - 1`` more that are ready now.

        Returns (parts, layout) for a data message: ``layout`` is ``{"sets": [...]}``
        (each set's members as [part, row]) or, for prefetched single-record sets,
        ``{"order": [part, ...]}`` (set i is the next row of part order[i]).
        """
        self._need_subscription()
        if advance_by < 1:
            raise SessionError(MessageType.BAD_SUBSCRIPTION, f"advance_by must be at least 1, not {advance_by}")
        deadline = time.monotonic() + timeout
        if self.sub.keep_up is KeepUp.RECORD or self.sub.sync:
            for _ in range(advance_by - 1):
                self._next_set(deadline)
            parts, sets = self._next_set(deadline)
            return parts, {"sets": sets}
        for _ in range(advance_by - 1):
            self._take(self._produce(deadline), 1)
        self._produce(deadline)
        return self._merged(max(1, prefetch))

    def _merged(self, n: int) -> tuple[list[Part], dict]:
        """Up to n pending records of all streams, merged in (entry, stream) order, without waiting."""
        heads = []
        for i, (s, st) in enumerate(self.streams.items()):
            while st.pending_count() < n and self._read_chunk(s, n):
                pass
            got = 0
            for c in st.pending:
                take = c.entries[c.pos : c.pos + n - got]
                heads.append((take, np.full(len(take), i, dtype=np.int64)))
                got += len(take)
                if got >= n:
                    break
        entries = np.concatenate([h[0] for h in heads])
        which = np.concatenate([h[1] for h in heads])
        pick = np.lexsort((which, entries))[:n]
        order_streams = which[pick]
        names = list(self.streams)
        parts, index = [], {}
        self._sent = {}
        for i in np.unique(order_streams):
            index[int(i)] = len(parts)
            name = names[i]
            part, ks = self._take_ks(name, int(np.count_nonzero(order_streams == i)))
            parts.append(part)
            self._sent[name] = (part.entries, ks)
        return parts, {"order": [index[int(i)] for i in order_streams]}

    def rewind(self, file: str, consumed: dict) -> dict:
        """The client used only ``consumed[stream]`` records of the last prefetched reply.

        Each stream goes back to just after its last used record, so what follows is
        exactly what a client without prefetch would get next.
        """
        self._need_subscription()
        if file != self.file:
            return {"file": self.file}
        for s, st in self.streams.items():
            used = consumed.get(s, 0)
            if s in self._sent and isinstance(used, int) and not isinstance(used, bool) and used >= 0:
                entries, ks = self._sent[s]
                if used == 0:
                    st.rewind(int(entries[0]), int(ks[0]))
                elif used < len(entries):
                    st.rewind(int(entries[used - 1]) + 1, int(ks[used - 1]) + 1)
                else:
                    st.rewind_unserved()
            else:
                st.rewind_unserved()
        self._sent = {}
        return {"file": self.file}

    def next_batch(self, max_records: int, timeout: float) -> tuple[list[Part], dict | None]:
        self._need_subscription()
        if max_records < 1:
            raise SessionError(MessageType.BAD_SUBSCRIPTION, f"max_records must be at least 1, not {max_records}")
        deadline = time.monotonic() + timeout
        if self.sub.keep_up is KeepUp.RECORD:
            return self._newest(deadline, max_records), None
        if self.sub.sync:
            return self._sync_batch(deadline, max_records)
        stream = self._produce(deadline)
        st = self.streams[stream]
        while st.pending_count() < max_records and self._read_chunk(stream, max_records):
            pass
        return [self._take(stream, max_records)], None

    def read_ahead(self) -> bool:
        """Between requests: read one chunk of what the next request will want. False: nothing to do.

        Bounded: at most READ_AHEAD records wait per stream. Only in ``all`` and
        ``file`` modes (``record`` mode wants what is newest when it is asked).
        """
        if self.sub is None or self.sub.keep_up is KeepUp.RECORD or self.reader is None:
            return False
        for s, st in self.streams.items():
            if st.pending_count() < READ_AHEAD:
                try:
                    if self._read_chunk(s):
                        return True
                except SessionError:  # e.g. a cut that does not fit this file: the request will say so
                    return False
                except Exception:  # a bug must cost at most an answer (the request meets it again), not the session
                    log.exception("error reading ahead in stream %s", s)
                    return False
        return False

    def go_to_file(self, name: str) -> dict:
        try:
            self.catalog.path(name)
        except NoFileError as exc:
            raise SessionError(MessageType.NO_FILE, str(exc)) from None
        self._enter(name)
        return {"file": name}

    def go_to_next_file(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            nxt = self._files_after(self.file)
            if nxt is not None:
                self._enter(nxt)
                return {"file": nxt}
            self._wait(deadline, f"no file after {self.file} within {timeout:g} s")

    def close(self) -> None:
        self._drop_spare()
        if self.reader is not None:
            self.reader.close()

    # ------------------------------------------------------------------ position

    def _need_subscription(self) -> None:
        if self.sub is None:
            raise SessionError(MessageType.BAD_SUBSCRIPTION, "no subscription yet: call subscribe() first")

    def _files(self) -> list[str]:
        try:
            files = self.catalog.files()
        except OSError as exc:
            if not self._dir_trouble:  # once, not at every poll
                log.warning("cannot list data directory %s: %s", self.catalog.root, exc)
                self._dir_trouble = True
            return []
        if self._dir_trouble:
            log.warning("data directory %s is readable again", self.catalog.root)
            self._dir_trouble = False
        return files

    def _files_after(self, name):
        for f in self._files():
            if name is None or f > name:
                return f
        return None

    def _start(self, start: str) -> None:
        files = self._files()
        if start in ("oldest", "current", "latest"):
            if not files:
                self._start_pending = start
                return
            self._start_pending = None
            name = files[0] if start == "oldest" else files[-1]
            self._enter(name)
            if start == "latest" and self.reader is not None:
                for s, st in self.streams.items():
                    info = self.reader.trees.get(s)
                    st.seek(info.num_entries if info else 0)
            return
        try:
            self.catalog.path(start)
        except NoFileError as exc:
            raise SessionError(MessageType.NO_FILE, f"start: {exc}") from None
        self._enter(start)

    def _enter(self, name: str) -> None:
        """Position at entry 0 of file ``name``."""
        if self.reader is not None:
            self._drop_reader()
        self.file = name
        self.final = False
        self.read_failures = 0
        self._quiet_polls = 0
        self.unreadable_polls = 0
        self._start_pending = None
        spare, self._spare = self._spare, None
        listed = name in self._files()
        if spare is not None and spare.name == name and listed:
            self.reader = spare  # the subscribe checks just opened it (start="current" is the newest file)
        else:
            if spare is not None:
                spare.close()
            self.reader = FileReader(self.catalog.path(name)) if listed else None
        for st in self.streams.values():
            st.seek(0)
        self._refresh()
        log.debug("now at file %s", name)

    def _is_open(self) -> bool:
        files = self._files()
        return bool(files) and files[-1] == self.file

    def _refresh(self, force: bool = False) -> bool:
        """Pick up growth of the current file; drop it if it vanished or cannot be read. True if it changed."""
        if self.reader is None:
            return False
        try:
            changed = self.reader.refresh(force)
            self.unreadable_polls = 0
            return changed
        except FileGone:
            log.warning("file %s disappeared; skipping it", self.file)
            self._drop_reader()
        except Unreadable as exc:
            self.unreadable_polls += 1
            if not self._is_open() or self.unreadable_polls >= UNREADABLE_POLLS:
                log.warning("skipping unreadable file %s: %s", self.file, exc)
                self._drop_reader()
                self.final = True
        return True

    def _move_on(self) -> bool:
        """Current file exhausted: go to the next one if it is closed. False: wait."""
        if self.file is None:
            if self._start_pending and self._files():
                # every record of a file that appeared after subscribing is new: "latest" reads it all
                self._start("current" if self._start_pending == "latest" else self._start_pending)
                return True
            return False
        if self.reader is not None and self._is_open():
            return False
        if self._read_to_end_if_closed():
            return True
        if self.sub.keep_up is KeepUp.FILE:
            files = self._files()
            nxt = files[-1] if files and files[-1] > self.file else None
        else:
            nxt = self._files_after(self.file)
        if nxt is None:
            return False
        self._enter(nxt)
        return True

    def _wait(self, deadline: float, what: str) -> None:
        now = time.monotonic()
        if now >= deadline:
            raise SessionError(MessageType.TIMEOUT, what)
        # A file that stays quiet is looked at less often, up to IDLE_BACKOFF times the interval.
        interval = self.poll_interval * min(IDLE_BACKOFF, 1 + self._quiet_polls // BACKOFF_AFTER)
        self._quiet_polls += 1
        self.waiter.wait(min(interval, deadline - now))
        if self.reader is not None and not self.final and self._refresh():
            self._quiet_polls = 0

    # ------------------------------------------------------------------ reading

    def _selection(self, stream: str, info):
        text = self.sub.selection_for(stream)
        if not text:
            return None
        key = (stream, tuple(sorted(info.kinds.items())))
        sel = self._selections.get(key)
        if sel is None:
            sel = self._selections[key] = _compile(text, stream, info.kinds)
        return sel

    def _fields(self, stream: str, info) -> list[str]:
        wanted = self.sub.branches_for(stream)
        if wanted is None:
            return list(info.kinds)
        return [b for b in wanted if b in info.kinds]

    def _read_chunk(self, stream: str, want: int = 1, limit: int | None = None) -> bool:
        """Read the next chunk of ``stream`` (up to entry ``limit``) into pending.

        False when nothing is left to read now."""
        if self.reader is None:
            return False
        info = self.reader.trees.get(stream)
        st = self.streams[stream]
        n = info.num_entries if info is not None else 0
        if limit is not None:
            n = min(n, limit)
        if st.cursor >= n:
            return False
        start = st.cursor
        stop = self._chunk_stop(stream, start, max(want, st.chunk), n)
        st.chunk = min(2 * st.chunk, CHUNK_ENTRIES)
        sel = self._selection(stream, info)
        fields = self._fields(stream, info)
        needed = set(fields)
        if sel is not None:
            needed |= sel.branches
        if self.sub.sync:
            needed.add(self.sub.sync)
        try:
            # no branch wanted (an empty branch list, or none of it in this file): nothing to read
            arrays = self.reader.read(stream, needed, start, stop) if needed else _no_fields(stop - start)
        except FileGone:
            log.warning("file %s disappeared while reading %s", self.file, stream)
            self._drop_reader()
            return False
        except Unreadable as exc:
            # The open file may be mid-write: retried on later polls, but not for ever.
            self.read_failures += 1
            if self._is_open() and self.read_failures < UNREADABLE_POLLS:
                log.log(logging.WARNING if self.read_failures == 1 else logging.DEBUG, "%s", exc)
                return False
            log.warning("skipping unreadable file %s: %s", self.file, exc)
            self._drop_reader()
            self.final = True
            return False
        self.read_failures = 0
        entries = np.arange(start, stop, dtype=np.int64)
        if sel is not None:
            # the entries come first, so a constant cut ("1") knows the chunk's length
            mask = sel.evaluate({"": entries, **{name: arrays[name] for name in sel.branches}})
            entries = entries[mask]
            arrays = arrays[mask]
        ks = st.passed + np.arange(len(entries), dtype=np.int64)
        st.passed += len(entries)
        prescale = self.sub.prescale
        if prescale > 1 and len(entries) and self.sub.keep_up is not KeepUp.RECORD:
            keep = ks % prescale == 0
            entries, arrays, ks = entries[keep], arrays[keep], ks[keep]
        st.cursor = stop
        if len(entries):
            out = fields + ([self.sub.sync] if self.sub.sync and self.sub.sync not in fields else [])
            st.pending.append(_Chunk(entries, arrays[out] if out else _no_fields(len(entries)), ks))
        return True

    def _chunk_stop(self, stream: str, start: int, target: int, n: int) -> int:
        stop = min(n, start + target)
        if stop == n:
            return n
        # Align to a basket boundary when one is near, so no basket is decompressed twice. The basket
        # holding ``stop`` is decompressed whole anyway, so a small first chunk also reads to its end.
        for off in self.reader.offsets(stream):
            if off >= stop:
                return off if off - start <= 4 * max(target, CHUNK_ENTRIES) else stop
        return stop

    def _fill(self) -> bool:
        """Make every stream have pending records or nothing left to read. True if any has some."""
        for s, st in self.streams.items():
            while not st.pending and self._read_chunk(s):
                pass
        return any(st.pending for st in self.streams.values())

    def _produce(self, deadline: float) -> str:
        """Wait until some stream has a record to serve; return the stream whose next entry is smallest."""
        while True:
            if self._fill():
                best = min((st.head_entry(), i, s) for i, (s, st) in enumerate(self.streams.items()) if st.pending)
                return best[2]
            if self._move_on():
                continue
            self._wait(deadline, self._timeout_text(deadline))

    def _timeout_text(self, deadline) -> str:
        where = f"file {self.file}" if self.file else "an empty data directory"
        return f"no record passing the subscription in {where} before the timeout"

    def _take(self, stream: str, n: int) -> Part:
        """Pop up to ``n`` pending records of ``stream`` as one part."""
        return self._take_ks(stream, n)[0]

    def _take_ks(self, stream: str, n: int) -> tuple[Part, np.ndarray]:
        """Pop up to ``n`` pending records of ``stream``: the part, and their prescale indices."""
        st = self.streams[stream]
        ents, arrs, kss = [], [], []
        while st.pending and n > 0:
            c = st.pending[0]
            k = min(n, len(c.entries) - c.pos)
            ents.append(c.entries[c.pos : c.pos + k])
            arrs.append(c.arrays[c.pos : c.pos + k])
            kss.append(c.ks[c.pos : c.pos + k])
            n -= k
            c.pos += k
            st.served, st.served_passed = int(ents[-1][-1]) + 1, int(kss[-1][-1]) + 1
            if c.pos == len(c.entries):
                st.pending.popleft()
        if len(ents) == 1:
            return Part(stream, self.file, ents[0], arrs[0]), kss[0]
        return Part(stream, self.file, np.concatenate(ents), ak.concatenate(arrs)), np.concatenate(kss)

    def _next_set(self, deadline: float):
        """One record set in ``record`` mode or with ``sync`` (the other modes go through _merged)."""
        if self.sub.keep_up is KeepUp.RECORD:
            parts = self._newest(deadline, 1)
            return parts, [{"file": parts[0].file, "members": [[0, 0]], "missing": []}]
        return self._sync_set(deadline)

    # ------------------------------------------------------------------ record mode

    def _newest(self, deadline: float, n: int) -> list[Part]:
        """The newest passing records not yet served (up to n), of one stream."""
        while True:
            files = self._files()
            if files and (self.file is None or files[-1] > self.file):
                self._enter(files[-1])
            else:
                self._refresh()
            if self.reader is not None:
                order = list(self.streams)
                for i in range(len(order)):
                    s = order[(self._rr + i) % len(order)]
                    part = self._scan_back(s, n)
                    if part is not None:
                        self._rr = (self._rr + i + 1) % len(order)
                        return [part]
            self._wait(deadline, self._timeout_text(deadline))

    def _scan_back(self, stream: str, n: int) -> Part | None:
        """Up to n newest passing entries of ``stream`` after its cursor, reading backwards."""
        info = self.reader.trees.get(stream)
        st = self.streams[stream]
        if info is None or info.num_entries <= st.cursor:
            return None
        st.pending.clear()
        hi, floor = info.num_entries, st.cursor
        found_e, found_a = [], []
        got = 0
        step = max(n, 1000)
        while hi > floor and got < n:
            lo = max(floor, hi - step)
            st.cursor = lo
            while st.cursor < hi:
                if not self._read_chunk(stream, hi - st.cursor, limit=hi):
                    st.pending.clear()
                    return None
            if st.pending:
                entries = np.concatenate([c.entries for c in st.pending])
                arrays = ak.concatenate([c.arrays for c in st.pending]) if len(st.pending) > 1 else st.pending[0].arrays
                st.pending.clear()
                k = min(n - got, len(entries))
                found_e.insert(0, entries[len(entries) - k :])
                found_a.insert(0, arrays[len(entries) - k :])
                got += k
            hi = lo
            step *= 2
        st.seek(info.num_entries)  # older records are skipped for good
        if not got:
            return None
        entries = np.concatenate(found_e)
        arrays = found_a[0] if len(found_a) == 1 else ak.concatenate(found_a)
        return Part(stream, self.file, entries, arrays)

    # ------------------------------------------------------------------ event building

    def _sync_value(self, stream: str):
        st = self.streams[stream]
        c = st.pending[0]
        return c.arrays[self.sub.sync][c.pos]

    def _sync_ready(self, deadline: float):
        """Wait for the next synced set: (value, members, missing)."""
        first_seen = {}
        while True:
            self._fill()
            v, members, missing, waiting = self._sync_candidate()
            if v is not None:
                if not waiting:
                    return v, members, missing
                if self._read_to_end_if_closed():
                    continue
                if self.reader is None or not self._is_open():
                    return v, members, missing
                t0 = first_seen.setdefault(v, time.monotonic())
                if time.monotonic() - t0 >= self.sub.max_sync_delay:
                    return v, members, missing
            elif self._move_on():
                continue
            self._wait(deadline, self._timeout_text(deadline))

    def _sync_set(self, deadline: float):
        v, members, missing = self._sync_ready(deadline)
        parts = [self._take(s, 1) for s in members]
        return parts, [{"file": self.file, "members": [[i, 0] for i in range(len(parts))], "missing": missing}]

    def _sync_batch(self, deadline: float, max_records: int):
        """Up to max_records synced sets of one file: one part per stream and each set's row in it."""
        max_records = min(max_records, MAX_SYNC_BATCH)
        rows = {s: [] for s in self.streams}
        taken = {s: [] for s in self.streams}
        nsets = 0
        file = None
        while nsets < max_records:
            if nsets == 0:
                v, members, missing = self._sync_ready(deadline)
                file = self.file
            else:
                # more sets only if they are ready now: a batch is returned as soon as it has one
                self._fill()
                v, members, missing = self._sync_ready_nowait()
                if v is None:
                    break
            for s in members:
                taken[s].append(self._take(s, 1))
                rows[s].append(nsets)
            nsets += 1
        parts = []
        positions = {}
        for s in self.streams:
            if taken[s]:
                ps = taken[s]
                parts.append(Part(s, file, np.concatenate([p.entries for p in ps]), ak.concatenate([p.arrays for p in ps])))
                positions[s] = rows[s]
        return parts, {"length": nsets, "positions": positions}

    def _sync_candidate(self):
        """The smallest sync value pending: (value, members, missing, waiting), value None if none.

        ``waiting``: the missing streams with nothing pending, which a growing file may still bring."""
        heads = {s: self._sync_value(s) for s, st in self.streams.items() if st.pending}
        if not heads:
            return None, [], [], []
        v = min(heads.values())
        members = [s for s in self.streams if s in heads and heads[s] == v]
        missing = [s for s in self.streams if s not in members]
        return v, members, missing, [s for s in missing if s not in heads]

    def _sync_ready_nowait(self):
        v, members, missing, waiting = self._sync_candidate()
        if v is None:
            return None, [], []
        if waiting:
            if self._read_to_end_if_closed():
                self._fill()
                return self._sync_ready_nowait()
            if self.reader is not None and self._is_open():
                return None, [], []
        return v, members, missing

    def _read_to_end_if_closed(self) -> bool:
        """The current file was just closed: read it once more, to its final length, before
        moving on or calling a stream missing from it. Forced: the last append may have left
        size and mtime unchanged (see tail.SETTLE_SECONDS). True if it did."""
        if self.reader is None or self.final or self._is_open():
            return False
        self.final = True
        self._refresh(force=True)
        return True

    # ------------------------------------------------------------------ checks

    def _check_against_files(self, sub: Subscription) -> None:
        """Reject, at subscribe time, what the newest file that has a stream shows is wrong."""
        files = self._files()
        for stream in sub.streams:
            info = self._find_tree(stream, files)
            if info is None:
                continue
            wanted = sub.branches_for(stream)
            for b in wanted or ():
                if b not in info.kinds:
                    raise SessionError(
                        MessageType.BAD_SUBSCRIPTION,
                        f"unknown branch {b!r} in branches for stream {stream}; {_suggest(b, info.kinds)}",
                    )
            if sub.sync and sub.sync not in info.kinds:
                raise SessionError(
                    MessageType.BAD_SUBSCRIPTION,
                    f"sync branch {sub.sync!r} is not in stream {stream}; {_suggest(sub.sync, info.kinds)}",
                )
            if sub.sync and info.kinds[sub.sync] != "flat":
                raise SessionError(MessageType.BAD_SUBSCRIPTION, f"sync branch {sub.sync!r} of stream {stream} is not a number")
            text = sub.selection_for(stream)
            if text:
                _compile(text, stream, info.kinds)

    def _find_tree(self, stream: str, files):
        if self.reader is not None and stream in self.reader.trees:
            return self.reader.trees[stream]
        for name in reversed(files[-3:]):
            if self._spare is not None and self._spare.name == name:
                r = self._spare
            else:
                r = FileReader(self.catalog.path(name))
                try:
                    r.refresh()
                except (FileGone, Unreadable):
                    r.close()
                    continue
                if self.reader is None:
                    self._drop_spare()
                    self._spare = r  # keep it open: the first subscription usually starts in it
                else:
                    r.close()
            if stream in r.trees:
                return r.trees[stream]
        return None

    def _drop_reader(self) -> None:
        """Close the current file now: a deleted file's space is freed only when no one holds it open."""
        self.reader.close()
        self.reader = None

    def _drop_spare(self) -> None:
        if self._spare is not None:
            self._spare.close()
            self._spare = None
