"""The logger's durable journal: its position, its output files, the event directory, the archive queue.

One SQLite database, ``OUTDIR/ddslogger.db``, written in transactions with
``synchronous=FULL``: a checkpoint commits, in one transaction, the event
directory rows of the records written since the last one, the source position
after them and how many entries the open output holds. After a kill -9 the
database says exactly what is durably in the files (the open output was fsynced
before the commit), so a restart resumes without gap or duplicate.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: the journal's file name inside the output directory
DB_NAME = "ddslogger.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outputs (
    name TEXT PRIMARY KEY, seq INTEGER NOT NULL, status TEXT NOT NULL,
    entries TEXT NOT NULL DEFAULT '{}', sha256 TEXT, archived INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS events (
    key, stream TEXT NOT NULL, source_file TEXT NOT NULL, source_entry INTEGER NOT NULL,
    output TEXT NOT NULL, output_entry INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS events_key ON events (key);
"""

#: one event directory row: key, stream, source file, source entry, output file, output entry
EventRow = tuple[object, str, str, int, str, int]


@dataclass
class OpenOutput:
    """The output file being written, as last checkpointed.

    Args:
        name (str): its final ``.root`` name.
        part (str): the temporary name it is written under.
        seq (int): its sequence number.
        entries (dict): ``{stream: entries durably in it}``.
        start (dict): the source position before its first record (to rebuild it from the source).
    """

    name: str
    part: str
    seq: int
    entries: dict[str, int] = field(default_factory=dict)
    start: dict = field(default_factory=dict)


class Store:
    """The journal of one output directory.

    Args:
        outdir (Path): the output directory; the database is ``outdir/ddslogger.db``.
        readonly (bool): for queries only (``--find``): no schema is made; default False. (Not SQLite's
            read-only mode, which cannot roll back the journal a kill left.)
    """

    def __init__(self, outdir: Path, readonly: bool = False):
        self.path = Path(outdir) / DB_NAME
        if readonly:
            self.db = sqlite3.connect(self.path, timeout=30)
        else:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ state

    def get(self, key: str, default=None):
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def _put(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def put(self, **values) -> None:
        """Store state values in one transaction."""
        with self._transaction():
            for k, v in values.items():
                self._put(k, v)

    def open_output(self) -> OpenOutput | None:
        value = self.get("open")
        return OpenOutput(**value) if value else None

    def _transaction(self):
        return _Transaction(self.db)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, position: dict, opened: OpenOutput | None, rows: Sequence[EventRow]) -> None:
        """Commit, at once, event rows, the source position and the open output.

        Args:
            position (dict): the source position after the last record in ``rows``.
            opened (OpenOutput | None): the output still being written (its part file fsynced), or None.
            rows (list): event directory rows written since the last checkpoint.
        """
        with self._transaction():
            self.db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._put("position", position)
            self._put("open", opened.__dict__ if opened else None)
            if opened is not None:
                self.db.execute("INSERT OR REPLACE INTO outputs (name, seq, status, entries) VALUES (?, ?, 'open', ?)",
                                (opened.name, opened.seq, json.dumps(opened.entries)))

    def close_output(self, out: OpenOutput, position: dict, rows: Sequence[EventRow]) -> None:
        """Record ``out`` as closed (its part file complete and fsynced), with its last rows."""
        with self._transaction():
            self.db.execute("INSERT OR REPLACE INTO outputs (name, seq, status, entries) VALUES (?, ?, 'closed', ?)",
                            (out.name, out.seq, json.dumps(out.entries)))
            self.db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._put("position", position)
            self._put("open", None)
            self._put("next_seq", out.seq + 1)

    def abandon_output(self, out: OpenOutput) -> None:
        """Forget an open output that cannot be salvaged: its rows go, the position goes back to its start."""
        with self._transaction():
            self.db.execute("DELETE FROM events WHERE output = ?", (out.name,))
            self.db.execute("DELETE FROM outputs WHERE name = ?", (out.name,))
            self._put("position", out.start)
            self._put("open", None)
            self._put("next_seq", out.seq)

    # ------------------------------------------------------------------ outputs and archive

    def closed_outputs(self) -> list[tuple[str, int, int]]:
        """``(name, archived, deleted)`` of every closed output, in sequence order."""
        return list(self.db.execute("SELECT name, archived, deleted FROM outputs WHERE status = 'closed' ORDER BY seq"))

    def to_archive(self) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT name FROM outputs WHERE status = 'closed' AND archived = 0 ORDER BY seq")]

    def to_delete(self) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT name FROM outputs WHERE status = 'closed' AND archived = 1 AND deleted = 0 ORDER BY seq")]

    def mark_archived(self, name: str, sha256: str) -> None:
        with self._transaction():
            self.db.execute("UPDATE outputs SET archived = 1, sha256 = ? WHERE name = ?", (sha256, name))

    def mark_deleted(self, name: str) -> None:
        with self._transaction():
            self.db.execute("UPDATE outputs SET deleted = 1 WHERE name = ?", (name,))

    def output_status(self, name: str) -> tuple[str, int, int] | None:
        row = self.db.execute("SELECT status, archived, deleted FROM outputs WHERE name = ?", (name,)).fetchone()
        return tuple(row) if row else None

    # ------------------------------------------------------------------ event directory

    def find(self, key) -> list[tuple]:
        """Event directory rows whose key equals ``key``: (stream, output, output entry, source file, source entry)."""
        return list(self.db.execute(
            "SELECT stream, output, output_entry, source_file, source_entry FROM events WHERE key = ? "
            "ORDER BY rowid", (key,)))

    def count_events(self) -> int:
        return self.db.execute("SELECT count(*) FROM events").fetchone()[0]


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on an error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def rows_for(keys: Iterable, stream: str, source_file: str, source_entries: Iterable[int], output: str,
             first_output_entry: int) -> list[EventRow]:
    """Event directory rows for records written consecutively to ``output`` from one source file."""
    return [(k, stream, source_file, int(e), output, first_output_entry + i)
            for i, (k, e) in enumerate(zip(keys, source_entries))]
