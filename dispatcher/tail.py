"""Read entries of the streams of one data file, safely, also while it grows.

uproot's writer rewrites the TTree metadata on every ``extend``; a reader that
opens the file at that moment can catch a half-written state. A reader that
keeps one handle open never sees growth. So: when ``stat`` says the file changed,
follow the growth in place where :mod:`dispatcher.incremental` can (a local file
whose trees uproot wrote: only the new basket slots are read), else re-open it;
retry a failed open or read after a short pause, re-opening each time. A read
either returns exactly the entries asked for or raises.

A branch that uproot cannot read is never allowed to take its stream down with
it: when a read keeps failing, each branch is tried alone, and those that fail
alone are left out of this file's stream (logged at Warning, and reported to
the client as *unserved*), while the others are served.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import awkward as ak
import numpy.ma  # noqa: F401  awkward imports it on the first read: load it once, before the parent forks
import uproot

from . import incremental, remote
from .baskets import window
from .budget import Expired, branch_budget, within
from .freshness import Growth
from .logsetup import warn_once
from .streams import StreamInfo, entry_offsets, is_stream_class, reason_of, schema, stream_info

log = logging.getLogger("dds.tail")

RETRY_PAUSES = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
#: File timestamps can be coarse (a jiffy; up to a second on some file systems), and
#: uproot writes small baskets into space it reserved, so an append in the same tick as
#: our stat can leave (size, mtime) unchanged. An open this soon after the mtime is
#: not trusted: the file is looked at once more when the tick has surely passed.
SETTLE_SECONDS = 1.0
#: stream layouts remembered per child (a DAQ writes the same few layouts into every file)
SCHEMA_CACHE = 64
#: follow growing files in place (DDS_TAIL_REOPEN=1: re-open on every change, as a baseline to measure against)
FOLLOW = os.environ.get("DDS_TAIL_REOPEN", "") in ("", "0")
#: polls of the follower that meet an append half-written before the file is opened anew
TORN_POLLS = 4
#: a read of at least this many entries of several branches of plain kinds reads them on PARALLEL_THREADS
#: threads: zlib and numpy let go of the GIL, so the baskets of two branches decompress at once
PARALLEL_ENTRIES = 10_000
PARALLEL_THREADS = 2
#: kinds whose reading is predictable (no object streamers): read in parallel, without a time budget
PLAIN_KINDS = frozenset({"flat", "fixed", "jagged", "string"})
_pool: tuple[int, ThreadPoolExecutor] | None = None


def _threads() -> ThreadPoolExecutor:
    """This process's pool (threads do not survive a fork: a forked child makes its own)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(PARALLEL_THREADS, thread_name_prefix="dds-read"))
    return _pool[1]
#: the stream description the session uses (kept under its former name too)
TreeInfo = StreamInfo

T = TypeVar("T")

_schemas: dict[tuple, tuple[dict[str, str], dict[str, str]]] = {}


class FileGone(OSError):
    """The file was deleted."""


class SlowBranch(Exception):
    """Reading one branch took longer than its budget."""

    def __init__(self, branch: str, seconds: float):
        super().__init__(f"uproot takes over {seconds:.3g} s to read it")
        self.branch = branch


class Unreadable(Exception):
    """The file cannot be read as ROOT (not ROOT, truncated, still being created)."""


def _describe(obj: Any, name: str, bad: dict[str, str]) -> StreamInfo:
    """The stream's description, its branch classification taken from the cache when the layout is known."""
    key = (name, schema(obj))
    cached = _schemas.get(key)
    if cached is None:
        info = stream_info(obj, name)
        if len(_schemas) >= SCHEMA_CACHE:
            _schemas.clear()
        _schemas[key] = (dict(info.kinds), dict(info.unserved))
    else:
        kinds, unserved = cached
        info = StreamInfo(name, int(obj.num_entries), dict(kinds), dict(unserved),
                          rntuple=not isinstance(obj, uproot.behaviors.TBranch.HasBranches))
    for b, why in bad.items():
        info.kinds.pop(b, None)
        info.unserved[b] = why
    return info


def signature(path: str) -> tuple[int, int, int]:
    """``(id, size, mtime in ns)`` of a data file, local or on XRootD: what says it changed.

    Raises:
        FileNotFoundError: no such file. remote.Unavailable: the XRootD server did not answer.
    """
    if remote.is_remote(path):
        return remote.stat(path)
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FileReader:
    """The streams of one data file.

    Args:
        path (str): full path of the file.
    """

    def __init__(self, path: str):
        self.path = path
        self.name = os.path.basename(path)
        self._file: Any = None
        self._sig: tuple | None = None
        self._settled = False  # opened long enough after the last write that no write can hide
        self.trees: dict[str, StreamInfo] = {}
        self._streams_seen: set[str] | None = None  # the streams the last open found (logged when they change)
        self._bad: dict[str, dict[str, str]] = {}  # stream -> branch -> why: failed alone in this file
        self._branch_maps: dict[str, dict[str, Any]] = {}  # stream -> branch name -> TBranch, of this open
        self._objects: dict[str, Any] = {}  # stream -> the TTree or RNTuple of this open (the follower updates them)
        self._follower: incremental.Follower | None = None
        self.growth = Growth()  # when each entry was first seen (for the age of what is served)

    def _stat(self) -> tuple:
        try:
            return signature(self.path)
        except FileNotFoundError:
            raise FileGone(f"file {self.name} was deleted") from None

    def refresh(self, force: bool = False) -> bool:
        """Pick up what changed on disk: in place, or by re-opening (always, when ``force``). True if
        the file changed. Raises FileGone or Unreadable."""
        stat_time = time.time()
        sig = self._stat()
        if sig[1] == 0:  # nothing written yet: no use retrying an open now
            raise Unreadable(f"{self.name} is empty")
        if sig == self._sig and self._file is not None and not force:
            if self._settled or stat_time - sig[2] / 1e9 < SETTLE_SECONDS:
                return False
        if self._follower is not None and not force:
            changed = self._follow(sig, stat_time)
            if changed is not None:
                return changed
        self._reopen()
        return True

    def _follow(self, sig: tuple, stat_time: float) -> bool | None:
        """Growth read in place by the follower: whether the file changed; None: it must be re-opened."""
        follower = self._follower
        assert follower is not None and self._sig is not None
        if sig[0] != follower.inode or sig[1] < self._sig[1]:
            return None  # replaced, or shrunk
        for pause in (0.0, *RETRY_PAUSES[: TORN_POLLS - 1]):
            if pause:
                time.sleep(pause)
            try:
                grown = follower.poll()
            except incremental.Torn as exc:
                log.debug("%s is mid-append: %s", self.name, exc)
                continue
            except (incremental.Stale, OSError) as exc:
                log.debug("re-opening %s: %s", self.name, exc)
                return None
            changed = sig != self._sig or bool(grown)
            for stream, (entries, starts) in grown.items():
                info = self.trees[stream]
                if info.offsets and starts is not None and info.offsets[-1] == info.num_entries:
                    info.offsets.extend(starts)
                else:
                    info.offsets = []  # worked out again when asked
                info.num_entries = entries
            self._sig = sig
            self._settled = stat_time - sig[2] / 1e9 >= SETTLE_SECONDS
            if grown:
                self.growth.note({s: e for s, (e, _) in grown.items()}, sig[2] / 1e9, stat_time)
            return changed
        return None

    def _retrying(self, attempt: Callable[[int], T], what: str, pauses: Iterable[float] = RETRY_PAUSES) -> T:
        """``attempt(n)`` for n = 0, 1, ... after short pauses, until it returns; then Unreadable."""
        last: Exception | None = None
        for n, pause in enumerate((0.0, *pauses)):
            if pause:
                time.sleep(pause)
            try:
                return attempt(n)
            except (FileGone, Unreadable, SlowBranch, remote.Unavailable):
                raise
            except Exception as exc:  # uproot raises many kinds on torn or foreign data
                last = exc
                log.debug("retrying %s of %s: %s", what, self.name, exc)
        raise Unreadable(f"cannot {what} of {self.name}: {type(last).__name__}: {last}")

    def is_empty(self) -> bool:
        """Whether the file holds no byte yet (a DAQ creating it), or is gone."""
        try:
            return signature(self.path)[1] == 0
        except OSError:
            return True

    def warn_if_no_stream(self) -> None:
        """For a closed file: one Warning per process when it holds no stream that can be served
        (an empty ROOT file, zeros after the magic, only other objects). The open file may still
        get its first stream, so it is not judged."""
        if self._file is not None and not any(t.kinds for t in self.trees.values()):
            warn_once(self.path, "", "file %s holds no readable stream: nothing is served from it", self.name)

    def _scan(self, f: Any, strict: bool, objects: dict[str, Any]) -> dict[str, StreamInfo]:
        """Every stream of the open file ``f`` (and into ``objects``, what uproot read for each).
        ``strict``: any stream that fails fails the scan (it may be a torn state); else such a
        stream is left out with a Warning (and left out of ``objects`` too)."""
        trees: dict[str, StreamInfo] = {}
        classnames = f.classnames(recursive=True, cycle=False)
        for key, classname in classnames.items():
            if not is_stream_class(classname):
                continue
            try:
                obj = f[key]
                info = _describe(obj, key, self._bad.get(key, {}))
            except Exception as exc:
                if strict:
                    raise
                warn_once(self.path, key, "cannot read stream %s (%s) in file %s: %s: %s",
                           key, classname, self.name, type(exc).__name__, exc)
                objects[key] = None
                continue
            trees[key] = info
            objects[key] = obj
            for b, why in info.unserved.items():
                warn_once(self.path, f"{key}/{b}", "file %s, stream %s: branch %s is not served: %s",
                           self.name, key, b, why)
        if classnames and not any(t.kinds for t in trees.values()):
            warn_once(self.path, "", "file %s has no stream DDS can serve (objects: %s)", self.name,
                       ", ".join(f"{k} ({c})" for k, c in list(classnames.items())[:10]))
        return trees

    def _open_once(self, strict: bool = True) -> None:
        stat_time = time.time()
        sig = self._stat()
        # no array cache: every range is read once, and a cache would hold up to 100 MB per child
        if remote.is_remote(self.path):  # vector reads: the baskets of one read in one request
            f = uproot.open(self.path, handler=remote.source(), timeout=remote.REQUEST_SECONDS, array_cache=None)
        else:
            f = uproot.open(self.path, handler=incremental.FreshFileSource, use_threads=False, array_cache=None)
        objects: dict[str, Any] = {}
        try:
            trees = self._scan(f, strict, objects)
        except BaseException:
            f.close()
            raise
        self.close()
        self._follower = self._attach(f, sig, objects) if FOLLOW and not remote.is_remote(self.path) else None
        self._objects = {s: obj for s, obj in objects.items() if obj is not None}
        if self._streams_seen != set(trees):  # a stream appeared (an RNTuple: when its writer committed it)
            log.debug("file %s holds %s", self.name, ", ".join(sorted(trees)) if trees else
                      "no stream yet (an RNTuple is readable only once its writer commits it)")
            self._streams_seen = set(trees)
        self._file, self._sig, self.trees = f, sig, trees
        self._branch_maps = {}
        self._settled = stat_time - sig[2] / 1e9 >= SETTLE_SECONDS
        self.growth.note({s: info.num_entries for s, info in trees.items()}, sig[2] / 1e9, stat_time)

    def _attach(self, f: Any, sig: tuple, objects: dict[str, Any]) -> incremental.Follower | None:
        """A follower of every stream of ``f``; None when one cannot be followed (or was left out)."""
        if any(obj is None for obj in objects.values()):
            return None
        try:
            return incremental.attach(self.path, sig[0], f, objects)
        except Exception as exc:  # an uproot whose objects are laid out otherwise: re-open on every change
            log.debug("cannot follow %s in place: %s: %s", self.name, type(exc).__name__, exc)
            return None

    def _reopen(self) -> None:
        last = len(RETRY_PAUSES)
        self._retrying(lambda n: self._open_once(strict=n < last), "read the ROOT structure")

    def offsets(self, stream: str) -> list[int]:
        info = self.trees[stream]
        if not info.offsets or info.offsets[-1] != info.num_entries:
            try:
                info.offsets = entry_offsets(self._objects[stream])
            except Exception:
                info.offsets = [0, info.num_entries]
        return info.offsets

    def _branches(self, stream: str) -> dict[str, Any]:
        """A TTree's branches by the name ``arrays()`` gives them, looked up once per open: uproot's
        own name matching walks every branch on every call (seconds per read on a 1,000-branch tree)."""
        found = self._branch_maps.get(stream)
        if found is None:
            found = {}
            for name, branch in self._objects[stream].iteritems(recursive=True, full_paths=False):
                found.setdefault(name, branch)
            self._branch_maps[stream] = found
        return found

    def _arrays(self, stream: str, names: Iterable[str], start: int, stop: int) -> ak.Array:
        if self._file is None:
            raise Unreadable(f"{self.name} is not open")
        obj = self._objects[stream]
        if obj.num_entries < stop:
            raise ValueError(f"stream has {obj.num_entries} entries, wanted {stop}")
        if isinstance(obj, uproot.behaviors.TBranch.HasBranches):
            # branch by branch, as arrays() reads them, zipped into records as arrays() zips them
            branches = self._branches(stream)
            wanted = set(names)
            budget = branch_budget(stop - start)
            kinds = self.trees[stream].kinds if stream in self.trees else {}

            def one(branch: Any) -> ak.Array:
                # only the baskets of the range: uproot walks all of a branch's baskets per read
                view, first = window(branch, start, stop)
                return view.array(entry_start=start - first, entry_stop=stop - first, library="ak")

            chosen = [(name, branch) for name, branch in branches.items() if name in wanted]
            columns = {}
            if (len(chosen) > 1 and stop - start >= PARALLEL_ENTRIES
                    and all(kinds.get(name) in PLAIN_KINDS for name, _ in chosen)):
                for (name, _), column in zip(chosen, _threads().map(one, [b for _, b in chosen])):
                    columns[name] = column
            else:
                for name, branch in chosen:
                    try:
                        columns[name] = within(budget, partial(one, branch))
                    except Expired:
                        raise SlowBranch(name, budget) from None
            if len(columns) != len(wanted):
                raise ValueError(f"no branch {sorted(wanted - set(columns))[:3]} in {stream}")
            arrays = ak.zip(columns, depth_limit=1) if columns else ak.Array(
                ak.contents.RecordArray([], [], length=stop - start))
        else:
            # filter_name with a callable: field names are matched, never parsed as expressions
            arrays = obj.arrays(filter_name=frozenset(names).__contains__, entry_start=start, entry_stop=stop,
                                library="ak")
        if len(arrays) != stop - start:
            raise ValueError(f"read {len(arrays)} entries, wanted {stop - start}")
        return arrays

    def read(self, stream: str, branches: Iterable[str], start: int, stop: int) -> ak.Array:
        """Entries ``[start, stop)`` of ``branches`` of ``stream`` as an awkward record array.

        A branch that cannot be read alone is dropped from this file's stream (see the
        module docstring): the array then lacks it, and ``trees[stream].unserved`` says why.
        """
        names = list(branches)
        what = f"read {stream}[{start}:{stop}]"

        def attempt(n: int) -> ak.Array:
            if n:
                self._open_once()  # a failed read may have met a torn state: look again
            return self._arrays(stream, names, start, stop)

        while True:
            try:
                try:
                    # a file still being written gets the whole schedule first: a torn state passes
                    return self._retrying(attempt, what, RETRY_PAUSES[:1] if self._settled else RETRY_PAUSES)
                except Unreadable:
                    if not self._drop_unreadable(stream, names, start, stop):
                        raise
                names = [b for b in names if b not in self._bad.get(stream, {})]
                return self._retrying(attempt, what)
            except SlowBranch as slow:
                self._drop(stream, {slow.branch: str(slow)})
                names = [b for b in names if b != slow.branch]

    def _drop_unreadable(self, stream: str, names: list[str], start: int, stop: int) -> bool:
        """Find the branches that fail to read while others read, and drop them from this file's
        stream. True if any was dropped."""
        bad = self._failing(stream, names, start, stop)
        if not bad or len(bad) == len(names):
            return False
        self._drop(stream, bad)
        return True

    def _drop(self, stream: str, bad: dict[str, str]) -> None:
        """Serve ``bad`` branches of ``stream`` no more in this file, saying why."""
        self._bad.setdefault(stream, {}).update(bad)
        info = self.trees.get(stream)
        for b, why in bad.items():
            if info is not None:
                info.kinds.pop(b, None)
                info.unserved[b] = why
            warn_once(self.path, f"{stream}/{b}", "file %s, stream %s: branch %s is not served: %s",
                       self.name, stream, b, why)

    def _failing(self, stream: str, names: list[str], start: int, stop: int) -> dict[str, str]:
        """The branches of ``names`` that fail to read alone, with why. In a file still being
        written, a writer mid-extend can fail the branches it is touching: only those that fail
        again after a pause, on a fresh open, count."""
        bad = self._probe(stream, names, start, stop)
        for pause in RETRY_PAUSES[-2:]:
            if not bad or self._settled:
                break
            time.sleep(pause)
            try:
                self._open_once()
            except (FileGone, Unreadable, remote.Unavailable):
                raise
            except Exception as exc:  # the file itself cannot be read now: no branch is to blame
                raise Unreadable(f"cannot read {self.name}: {type(exc).__name__}: {exc}") from None
            bad = self._probe(stream, list(bad), start, stop)
        return bad

    def _probe(self, stream: str, names: list[str], start: int, stop: int) -> dict[str, str]:
        bad = {}
        for name in names:
            try:
                self._arrays(stream, [name], start, stop)
            except (FileGone, Unreadable, remote.Unavailable):
                raise
            except SlowBranch as slow:
                bad[name] = str(slow)
            except Exception as exc:
                bad[name] = f"uproot cannot read it: {reason_of(exc)}"
        return bad

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
            self._follower = None
        if self._file is not None:
            try:
                self._file.close()
            except Exception:
                pass
            self._file = None
