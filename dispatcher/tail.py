"""Read entries of the streams of one data file, safely, also while it grows.

uproot's writer rewrites the TTree metadata on every ``extend``; a reader that
opens the file at that moment can catch a half-written state. A reader that
keeps one handle open never sees growth. So: re-open when ``stat`` says the file
changed, and retry a failed open or read after a short pause, re-opening each
time. A read either returns exactly the entries asked for or raises.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import awkward as ak
import numpy.ma  # noqa: F401  awkward imports it on the first read: load it once, before the parent forks
import uproot

log = logging.getLogger("dds.tail")

RETRY_PAUSES = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
#: File timestamps can be coarse (a jiffy; up to a second on some file systems), and
#: uproot writes small baskets into space it reserved, so an append in the same tick as
#: our stat can leave (size, mtime) unchanged. An open this soon after the mtime is
#: not trusted: the file is looked at once more when the tick has surely passed.
SETTLE_SECONDS = 1.0


class FileGone(OSError):
    """The file was deleted."""


class Unreadable(Exception):
    """The file cannot be read as ROOT (not ROOT, truncated, still being created)."""


@dataclass
class TreeInfo:
    name: str
    num_entries: int
    kinds: dict  # branch name -> "flat" | "jagged"
    offsets: list = field(default_factory=list)  # entry offsets where every branch starts a basket


def _kind(branch) -> str | None:
    interp = branch.interpretation
    if isinstance(interp, uproot.interpretation.numerical.AsDtype) and interp.inner_shape == ():
        return "flat"
    if isinstance(interp, uproot.interpretation.jagged.AsJagged) and isinstance(
        interp.content, uproot.interpretation.numerical.AsDtype
    ):
        return "jagged"
    return None  # strings, objects, fixed-size arrays: not served


def _scan(file) -> dict[str, TreeInfo]:
    trees = {}
    for key, classname in file.classnames(cycle=False).items():
        if classname != "TTree":
            continue
        tree = file[key]
        kinds = {}
        for b in tree.branches:
            k = _kind(b)
            if k is not None:
                kinds[b.name] = k
        trees[key] = TreeInfo(key, int(tree.num_entries), kinds)
    return trees


class FileReader:
    """The trees of one data file.

    Args:
        path (str): full path of the file.
    """

    def __init__(self, path: str):
        self.path = path
        self.name = os.path.basename(path)
        self._file = None
        self._sig = None
        self._settled = False  # opened long enough after the last write that no write can hide
        self.trees: dict[str, TreeInfo] = {}

    def _stat(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise FileGone(f"file {self.name} was deleted") from None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def refresh(self, force: bool = False) -> bool:
        """Re-open if the file changed on disk (or ``force``); True if it did. Raises FileGone or Unreadable."""
        sig = self._stat()
        if sig == self._sig and self._file is not None and not force:
            if self._settled or time.time() - sig[2] / 1e9 < SETTLE_SECONDS:
                return False
        self._reopen()
        return True

    def _retrying(self, attempt, what: str):
        """``attempt(n)`` for n = 0, 1, ... after short pauses, until it returns; then Unreadable."""
        last = None
        for n, pause in enumerate((0.0, *RETRY_PAUSES)):
            if pause:
                time.sleep(pause)
            try:
                return attempt(n)
            except (FileGone, Unreadable):
                raise
            except Exception as exc:  # uproot raises many kinds on torn or foreign data
                last = exc
                log.debug("retrying %s of %s: %s", what, self.name, exc)
        raise Unreadable(f"cannot {what} of {self.name}: {type(last).__name__}: {last}")

    def _open_once(self) -> None:
        stat_time = time.time()
        sig = self._stat()
        # no array cache: every range is read once, and a cache would hold up to 100 MB per child
        f = uproot.open(self.path, handler=uproot.source.file.MultithreadedFileSource, use_threads=False,
                        array_cache=None)
        try:
            trees = _scan(f)
        except BaseException:
            f.close()
            raise
        self.close()
        self._file, self._sig, self.trees = f, sig, trees
        self._settled = stat_time - sig[2] / 1e9 >= SETTLE_SECONDS

    def _reopen(self) -> None:
        self._retrying(lambda n: self._open_once(), "read the ROOT structure")

    def offsets(self, stream: str) -> list:
        info = self.trees[stream]
        assert self._file is not None, "offsets of a closed file"
        if not info.offsets or info.offsets[-1] != info.num_entries:
            try:
                info.offsets = [int(x) for x in self._file[stream].common_entry_offsets()]
            except Exception:
                info.offsets = [0, info.num_entries]
        return info.offsets

    def read(self, stream: str, branches, start: int, stop: int) -> ak.Array:
        """Entries ``[start, stop)`` of ``branches`` of tree ``stream`` as an awkward record array."""
        # filter_name with a callable: branch names are matched, never parsed as expressions
        wanted = frozenset(branches).__contains__

        def attempt(n: int) -> ak.Array:
            if n:
                self._open_once()  # a failed read may have met a torn state: look again
            if self._file is None:
                raise Unreadable(f"{self.name} is not open")
            tree = self._file[stream]
            if tree.num_entries < stop:
                raise ValueError(f"tree has {tree.num_entries} entries, wanted {stop}")
            arrays = tree.arrays(filter_name=wanted, entry_start=start, entry_stop=stop, library="ak")
            if len(arrays) != stop - start:
                raise ValueError(f"read {len(arrays)} entries, wanted {stop - start}")
            return arrays

        return self._retrying(attempt, f"read {stream}[{start}:{stop}]")

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                pass
            self._file = None
