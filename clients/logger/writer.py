"""One output file: a tree per stream, written under a temporary name and renamed once closed.

The file object is ours (uproot writes into it), so a checkpoint can fsync what
uproot wrote so far: after each ``extend`` the file on disk is readable by uproot
up to that point, which is what :func:`salvage` relies on after a kill -9.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import uproot

from .columns import Columns, Writability, prepare

log = logging.getLogger("ddslogger")


def fsync_path(path: Path) -> None:
    """Make what was written to the file (or directory) at ``path`` durable, through a descriptor of its own."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside directory ``path`` durable."""
    fsync_path(path)


class OutputFile:
    """An output ROOT file being written.

    Args:
        outdir (Path): the output directory.
        name (str): the final name (``*.root``), taken once closed.
        part (str): the temporary name it is written under.
    """

    def __init__(self, outdir: Path, name: str, part: str):
        self.outdir = Path(outdir)
        self.name = name
        self.part = part
        self._fo = open(self.outdir / part, "w+b")
        self._file = uproot.recreate(self._fo)
        self.types: dict[str, dict[str, str]] = {}
        self.entries: dict[str, int] = {}

    def fits(self, stream: str, columns: Columns) -> bool:
        """False when ``stream`` already has a tree here with other branches or types."""
        return stream not in self.types or self.types[stream] == columns.types

    def write(self, stream: str, columns: Columns) -> int:
        """Append ``columns`` to the tree of ``stream``; returns the tree entry of the first one."""
        if stream not in self.types:
            self._file.mktree(stream, {k: v.type.content for k, v in columns.data.items()})
            self.types[stream] = dict(columns.types)
            self.entries[stream] = 0
        first = self.entries[stream]
        n = len(next(iter(columns.data.values()))) if columns.data else 0
        if n:
            self._file[stream].extend(columns.data)
            self.entries[stream] = first + n
        return first

    def size(self) -> int:
        return os.fstat(self._fo.fileno()).st_size

    def sync(self) -> None:
        """Make everything written so far durable."""
        self._fo.flush()
        os.fsync(self._fo.fileno())

    def close(self) -> None:
        """Close the file (uproot writes its last metadata) and make it durable, still under its part name."""
        self._file.close()  # closes self._fo too
        fsync_path(self.outdir / self.part)

    def abort(self) -> None:
        """Close without caring for the content (the part file is removed by the caller)."""
        try:
            self._file.close()
        except Exception:  # an unfinished write; the file is thrown away anyway
            self._fo.close()


def finish(outdir: Path, name: str, part: str) -> None:
    """Rename a closed part file to its final name, durably."""
    os.replace(Path(outdir) / part, Path(outdir) / name)
    fsync_dir(Path(outdir))


def salvage(outdir: Path, old_part: str, entries: dict[str, int], name: str, new_part: str,
            writability: Writability) -> OutputFile:
    """Copy the first ``entries`` of each tree of a part file left by a kill into a new part file.

    Raises:
        ValueError: the part file does not hold that many readable entries (the caller then rebuilds
            the output from the source).
    """
    out = OutputFile(outdir, name, new_part)
    try:
        with uproot.open(Path(outdir) / old_part) as old:
            for stream, n in entries.items():
                if n == 0:
                    continue
                tree = old[stream]
                if tree.num_entries < n:
                    raise ValueError(f"{old_part}: tree {stream} holds {tree.num_entries} entries, "
                                     f"the journal says {n}")
                out.write(stream, prepare(tree.arrays(entry_stop=n), writability))
        out.sync()
    except BaseException:
        out.abort()
        (Path(outdir) / new_part).unlink(missing_ok=True)
        raise
    return out
