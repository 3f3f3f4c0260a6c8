"""What ``next`` and ``next_batch`` return."""

from __future__ import annotations

import awkward as ak
import numpy as np


class RecordSet:
    """One record set: a record per stream (several when synced), all from one file.

    Attributes:
        file (str): data file name inside the data directory.
        records (dict): ``{stream: {branch: value}}``.
        entries (dict): ``{stream: entry index in that file's tree}``.
        missing (tuple): streams left out of a synced set; empty otherwise.
        unserved (dict): ``{stream: {branch: why}}``, branches the file's streams hold that the
            server cannot serve (uproot cannot read them); empty when everything is served.
        lag (dict): ``{stream: records of that stream written after the one in this set}``, as the
            server knew it when it replied.
        age (float or None): seconds since the newest record in the set was written, as best the
            server knows (when it first saw it; for a file already closed then, its modification time),
            at the time it replied; None when the server did not say.
        skipped (dict): keep-up ``record`` only: ``{stream: passing records skipped since the previous
            set}``; empty in the other modes.
        redelivered (bool): a group subscription only: the record was handed before to a member whose
            session ended without acknowledging it (it may have been processed already).
    """

    __slots__ = ("file", "records", "entries", "missing", "unserved", "lag", "age", "skipped", "redelivered")

    def __init__(self, file: str, records: dict, entries: dict, missing=(), unserved: dict | None = None,
                 lag: dict | None = None, age: float | None = None, skipped: dict | None = None,
                 redelivered: bool = False):
        self.file = file
        self.records = records
        self.entries = entries
        self.missing = tuple(missing)
        self.unserved = unserved or {}
        self.lag = lag or {}
        self.age = age
        self.skipped = skipped or {}
        self.redelivered = redelivered

    @property
    def stream(self) -> str | None:
        """The stream, when the set holds one record."""
        return next(iter(self.records)) if len(self.records) == 1 else None

    def __getitem__(self, stream: str) -> dict:
        return self.records[stream]

    def __contains__(self, stream: str) -> bool:
        return stream in self.records

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}[{e}]" for s, e in self.entries.items())
        miss = f", missing={list(self.missing)}" if self.missing else ""
        return f"<RecordSet {self.file}: {parts}{miss}>"


class RecordBatch:
    """Up to ``max_records`` records of one stream from one file, as columns.

    Attributes:
        stream (str): the stream (None for a batch of synced sets).
        file (str): data file name.
        entries (numpy.ndarray): int64 entry numbers (for synced sets: ``{stream: entries}``, -1 where missing).
        arrays (awkward.Array): one record per entry (for synced sets: one field per stream, None where missing).
        unserved (dict): ``{stream: {branch: why}}``, what the server cannot serve of this file's streams.
        lag (dict): ``{stream: records written after the last one of that stream in this batch}``.
        age (float or None): seconds since the newest record in the batch was written (see RecordSet).
        skipped (dict): keep-up ``record`` only: ``{stream: passing records skipped since the previous
            set or batch}``; empty in the other modes.
        redelivered (bool): a group subscription only: the batch's records were handed before to a
            member whose session ended without acknowledging them (they may have been processed already).
    """

    __slots__ = ("stream", "file", "entries", "arrays", "unserved", "lag", "age", "skipped", "redelivered")

    def __init__(self, stream, file: str, entries, arrays: ak.Array, unserved: dict | None = None,
                 lag: dict | None = None, age: float | None = None, skipped: dict | None = None,
                 redelivered: bool = False):
        self.stream = stream
        self.file = file
        self.entries = entries
        self.arrays = arrays
        self.unserved = unserved or {}
        self.lag = lag or {}
        self.age = age
        self.skipped = skipped or {}
        self.redelivered = redelivered

    def __len__(self) -> int:
        return len(self.arrays)

    def __repr__(self) -> str:
        what = self.stream if self.stream else "synced sets"
        if isinstance(self.entries, np.ndarray) and len(self.entries):
            span = f" entries {self.entries[0]}..{self.entries[-1]}"
        else:
            span = ""
        return f"<RecordBatch {what} from {self.file}: {len(self)} records{span}>"
