"""The logging loop: receive batches, write them, checkpoint, rotate, reconnect.

Order of durable steps (what makes a kill -9 at any moment harmless):

1. records are appended to the open output (a ``.part`` file) and to the
   in-memory event directory rows; the in-memory position moves past them;
2. a checkpoint fsyncs the part file, then commits rows, position and the
   open output's entry counts in one journal transaction;
3. closing an output: uproot closes it, it is fsynced, the journal marks it
   closed (with its last rows and the position), then it is renamed to its
   ``.root`` name and the directory fsynced. A restart finishes a rename the
   journal asked for; it copies the checkpointed entries of a ``.part`` file left
   open into a fresh one (or, when that file is unreadable, rebuilds it from the
   source from where it began), and resumes the source from the position.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import awkward as ak
import numpy as np

from clients.client import DDSClient
from clients.errors import DDSError, DDSTimeout
from clients.records import RecordBatch
from dispatcher.protocol import MessageType
from dispatcher.subscription import KeepUp, Subscription

from .archiver import Archiver
from .columns import Writability, prepare
from .diskguard import DiskGuard
from .naming import PART_SUFFIX, output_name, part_name
from .options import LoggerOptions
from .position import Position
from .store import EventRow, OpenOutput, Store, rows_for
from .writer import OutputFile, finish, fsync_dir, salvage

log = logging.getLogger("ddslogger")

#: errors after which reconnecting cannot help: the command line is wrong
_FATAL = (MessageType.BAD_SUBSCRIPTION, MessageType.BAD_SELECTION)
#: longest wait between connection attempts, in seconds
MAX_RECONNECT_WAIT = 5.0


class LoggerError(Exception):
    """The logger cannot run as asked; the message says why and what to do."""


def _key_values(arrays: ak.Array, key: str | None) -> list:
    if key is None or key not in arrays.fields:
        return [None] * len(arrays)
    return [v if v is None or isinstance(v, (int, float, str)) else str(v) for v in arrays[key].to_list()]


class DataLogger:
    """One logger writing into one output directory.

    Args:
        opts (LoggerOptions): what to log, from where, into where.
        clock (callable): monotonic seconds; tests may give a fake one.
        guard (DiskGuard | None): the disk occupancy guard; default one from ``opts``.
    """

    def __init__(self, opts: LoggerOptions, clock: Callable[[], float] = time.monotonic,
                 guard: DiskGuard | None = None):
        self.opts = opts
        self.outdir = Path(opts.outdir)
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.guard = guard or DiskGuard(str(self.outdir), opts.max_disk_percent)
        self.store = Store(self.outdir)
        self.writability = Writability()
        self.position = Position()
        self.out: OutputFile | None = None
        self.out_state: OpenOutput | None = None
        self.opened_at = 0.0
        self.rows: list[EventRow] = []
        self.last_checkpoint = clock()
        self.stopping = False
        self.client: DDSClient | None = None
        self.archiver: Archiver | None = None
        self.records_written = 0
        self._told: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ start: recovery

    def recover(self) -> None:
        """Bring the output directory to the state the journal describes, and load the position."""
        wanted = self.opts.subscription_text()
        saved = self.store.get("subscription")
        if saved is None:
            stray = sorted(p.name for p in self.outdir.glob("*.root"))
            if stray:
                raise LoggerError(f"output directory {self.outdir} holds .root files ({', '.join(stray[:3])}...) "
                                  f"but no ddslogger journal ({self.store.path.name}); give an empty or new directory")
            self.store.put(subscription=wanted)
        elif saved != wanted:
            raise LoggerError(f"output directory {self.outdir} was logged with {saved}, not {wanted}; restart with "
                              "the same options, or log into a new directory")
        for name, _archived, deleted in self.store.closed_outputs():
            part = self.outdir / part_name(name)
            if not deleted and not (self.outdir / name).exists() and part.exists():
                finish(self.outdir, name, part.name)
                log.info("finished closing %s (renamed from %s)", name, part.name)
        self.position = Position(self.store.get("position"))
        opened = self.store.open_output()
        if opened is not None:
            self._salvage(opened)
        keep = self.out.part if self.out else None
        for p in self.outdir.glob(f".*{PART_SUFFIX}"):
            if p.name != keep:
                p.unlink()
                log.info("removed %s: written after the last checkpoint", p.name)
        fsync_dir(self.outdir)

    def _salvage(self, opened: OpenOutput) -> None:
        # a new name per salvage: the part file being read is never the one being written
        stem = part_name(opened.name)[:-len(PART_SUFFIX)]
        tail = opened.part[len(stem):-len(PART_SUFFIX)]
        generation = int(tail[1:]) + 1 if tail[1:].isdigit() else 1
        new_part = f"{stem}.{generation}{PART_SUFFIX}"
        try:
            out = salvage(self.outdir, opened.part, opened.entries, opened.name, new_part, self.writability)
        except Exception as exc:  # unreadable: rebuild it from the source instead
            log.warning("open output %s could not be read back (%s): it is rebuilt from source file %s",
                        opened.part, exc, Position(opened.start).resume_file() or "start")
            self.store.abandon_output(opened)
            self.position = Position(opened.start)
            return
        state = OpenOutput(opened.name, new_part, opened.seq, dict(out.entries), opened.start)
        self.store.checkpoint(self.position.to_dict(), state, [])
        self.out, self.out_state, self.opened_at = out, state, self.clock()
        log.info("continuing %s with its %s checkpointed entries", opened.name, sum(out.entries.values()))

    # ------------------------------------------------------------------ the connection

    def subscription(self, start: str) -> Subscription:
        o = self.opts
        return Subscription(streams=tuple(o.streams), keep_up=KeepUp.ALL, selection=o.selection, branches=o.branches,
                            start=start, sync=o.sync, max_sync_delay=o.max_sync_delay)

    def connect(self) -> DDSClient | None:
        """Connect and subscribe from the position, retrying until it works or the logger stops."""
        wait = 0.2
        while not self.stopping:
            try:
                client = DDSClient(self.opts.host, self.opts.port, connect_timeout=10.0)
            except DDSError as exc:
                log.warning("%s; retrying in %.1f s", exc, wait)
                self._sleep(wait)
                wait = min(wait * 2, MAX_RECONNECT_WAIT)
                continue
            resume = self.position.resume_file()
            try:
                try:
                    client.subscribe(self.subscription(resume or self.opts.start))
                except DDSError as exc:
                    if resume is None or exc.message_type is not MessageType.NO_FILE:
                        raise
                    log.warning("source file %s is gone from the server; resuming from its oldest file, "
                                "skipping what was logged", resume)
                    client.subscribe(self.subscription("oldest"))
            except DDSError as exc:
                client.close()
                if exc.message_type in _FATAL:
                    raise LoggerError(f"the server refused the subscription: {exc}") from None
                log.warning("subscribing failed: %s; retrying in %.1f s", exc, wait)
                self._sleep(wait)
                continue
            log.info("connected to %s; logging %s from %s", client.address, ", ".join(self.opts.streams),
                     resume or self.opts.start)
            return client
        return None

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    # ------------------------------------------------------------------ records

    def handle(self, batch: RecordBatch) -> None:
        """Write the new records of a batch (those after the position) and move the position."""
        for stream, why in batch.unserved.items():
            for branch, reason in why.items():
                self._tell(stream, branch, f"the server does not serve branch {branch!r} of stream {stream} "
                                           f"in {batch.file}: {reason}")
        if isinstance(batch.entries, dict):  # synced sets: a field per stream, None where missing
            for stream, entries in batch.entries.items():
                present = entries >= 0
                if present.any():
                    arrays = ak.drop_none(batch.arrays[stream][present], axis=0)
                    self._handle_stream(stream, batch.file, entries[present], arrays)
        else:
            self._handle_stream(batch.stream, batch.file, np.asarray(batch.entries), batch.arrays)

    def _tell(self, stream: str, branch: str, text: str) -> None:
        if (stream, branch) not in self._told:
            self._told.add((stream, branch))
            log.warning("%s; not logged", text)

    def _handle_stream(self, stream: str, file: str, entries: np.ndarray, arrays: ak.Array) -> None:
        new = self.position.new_mask(stream, file, entries)
        if not new.any():
            return
        entries, arrays = entries[new], arrays[new]
        passed, last = len(entries), int(entries[-1])
        if self.opts.prescale > 1:
            keep = self.position.prescale_mask(stream, passed, self.opts.prescale)
            entries, arrays = entries[keep], arrays[keep]
        if len(entries):
            cols = prepare(arrays, self.writability)
            for branch, why in cols.skipped.items():
                self._tell(stream, branch, f"branch {branch!r} of stream {stream}: {why}")
            if self.out is not None and not self.out.fits(stream, cols):
                log.info("stream %s changed its branches in %s: starting a new output file", stream, file)
                self.rotate()
            out = self._output(file)
            first = out.write(stream, cols)
            self.rows.extend(rows_for(_key_values(arrays, self.opts.index_key), stream, file, entries,
                                      out.name, first))
            self.records_written += len(entries)
        self.position.advance(stream, file, last, passed)

    def _output(self, source_file: str) -> OutputFile:
        if self.out is None:
            seq = int(self.store.get("next_seq", 1))
            name = output_name(self.opts.name_pattern, seq, source_file)
            self.out = OutputFile(self.outdir, name, part_name(name))
            self.out_state = OpenOutput(name, self.out.part, seq, {}, self.position.to_dict())
            self.opened_at = self.clock()
        return self.out

    # ------------------------------------------------------------------ durability

    def checkpoint(self) -> None:
        """Make what was written durable, and commit the position that goes with it."""
        if self.out is not None and self.out_state is not None:
            self.out.sync()
            self.out_state.entries = dict(self.out.entries)
        self.store.checkpoint(self.position.to_dict(), self.out_state if self.out else None, self.rows)
        self.rows = []
        self.last_checkpoint = self.clock()

    def rotate(self) -> None:
        """Close the open output and give it its final ``.root`` name."""
        if self.out is None or self.out_state is None:
            return
        out, state = self.out, self.out_state
        out.close()
        state.entries = dict(out.entries)
        self.store.close_output(state, self.position.to_dict(), self.rows)
        self.rows = []
        finish(self.outdir, state.name, state.part)
        self.out, self.out_state = None, None
        self.last_checkpoint = self.clock()
        log.info("closed %s: %s", state.name, ", ".join(f"{s} {n} entries" for s, n in state.entries.items()))
        if self.archiver is not None:
            self.archiver.wake.set()

    def _due(self) -> None:
        now = self.clock()
        if self.out is not None:
            too_big = self.out.size() >= self.opts.max_file_mb * 1e6
            too_old = self.opts.max_file_seconds is not None and now - self.opened_at >= self.opts.max_file_seconds
            if too_big or too_old:
                self.rotate()
                return
        if now - self.last_checkpoint >= self.opts.checkpoint_seconds and (self.rows or self.out is not None):
            self.checkpoint()

    # ------------------------------------------------------------------ the loop

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler: it only sets a flag)."""
        self.stopping = True

    def run(self) -> None:
        """Log until :meth:`stop`; the open output is closed (renamed to ``.root``) on the way out."""
        self.recover()
        if self.opts.archive:
            self.archiver = Archiver(self.outdir, Path(self.opts.archive), self.opts.delete_after_archive,
                                     self.opts.archive_max_backoff)
            self.archiver.start()
        poll = min(1.0, self.opts.max_file_seconds or 1.0, self.opts.checkpoint_seconds)
        try:
            while not self.stopping:
                self.guard.wait(lambda: self.stopping)
                if self.client is None:
                    self.client = self.connect()
                    if self.client is None:
                        break
                try:
                    batch = self.client.next_batch(self.opts.batch_records, timeout=poll)
                except DDSTimeout:
                    pass
                except DDSError as exc:
                    if exc.message_type in _FATAL:
                        raise LoggerError(f"the server refused the subscription: {exc}") from None
                    log.warning("lost the server (%s); reconnecting", exc)
                    self.client.close()
                    self.client = None
                else:
                    self.handle(batch)
                self._due()
        finally:
            if self.client is not None:
                self.client.close()
            if self.out is not None:
                self.rotate()
            else:
                self.checkpoint()
            if self.archiver is not None:
                self.archiver.stop(drain=True)
                self.archiver.join(30.0)
            self.store.close()
