"""Compare what DDS serves with what uproot reads, stream by stream, for real ROOT files.

Used by ``tests/test_corpus.py`` (a subset, in ``make test``) and by
``python tests/corpus.py [FILES...]`` (``make compat``: every file of the corpus,
a table and a summary). The reference is uproot itself: for each stream (TTree,
TNtuple or RNTuple, also inside directories) the branches uproot can read one by
one, then ``arrays(library="ak")`` over them. A stream is *exact* when DDS serves
every one of those branches for every entry with the same values (NaN equal to
NaN), *partial* when branches are missing, *wrong* when a value differs, and
*missing* when nothing arrives.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

CORPUS = Path(os.environ.get("DDS_CORPUS", Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"))
TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD")
#: seconds uproot may spend reading one branch of the reference before it counts as unreadable
#: (some streamed-object branches take minutes in uproot itself)
REFERENCE_SECONDS = 20.0
#: seconds the reference may spend on one stream's branches one by one (thousands of streamed-object
#: branches can take uproot hours); the rest are excluded, with that reason
STREAM_SECONDS = 120.0
#: entries compared at most per stream (the whole stream is served; the reference is cut there)
MAX_ENTRIES = 200_000


def is_stream_class(classname: str) -> bool:
    return classname in TREE_CLASSES or classname.endswith("RNTuple")


@dataclass
class Outcome:
    file: str
    stream: str
    classname: str
    entries: int
    readable: int = 0
    served: int = 0
    status: str = ""
    detail: str = ""
    excluded: dict = field(default_factory=dict)


class _Slow(Exception):
    pass


def _alarm(signum, frame):
    raise _Slow()


def streams_of(path: str) -> list[tuple[str, str, int]]:
    """(name, class, entries) of every stream with entries in the file."""
    out = []
    with uproot.open(path) as f:
        for key, classname in f.classnames(recursive=True, cycle=False).items():
            if not is_stream_class(classname):
                continue
            try:
                n = int(f[key].num_entries)
            except Exception:
                continue
            if n > 0:
                out.append((key, classname, n))
    return out


def _field_names(obj) -> list[str]:
    if isinstance(obj, uproot.behaviors.TBranch.HasBranches):
        names = []
        for name, branch in obj.iteritems(recursive=True, full_paths=False):
            interp = branch.interpretation
            if isinstance(interp, uproot.interpretation.grouped.AsGrouped):
                continue
            names.append(name)
        return list(dict.fromkeys(names))
    return list(obj.keys(recursive=False))


def _one_at_a_time(obj):
    """A TTree's branches by the name arrays() gives them (None for an RNTuple)."""
    if not isinstance(obj, uproot.behaviors.TBranch.HasBranches):
        return None
    found = {}
    for name, branch in obj.iteritems(recursive=True, full_paths=False):
        found.setdefault(name, branch)
    return found


def _read(obj, names, stop):
    wanted = frozenset(names).__contains__
    return obj.arrays(filter_name=wanted, entry_stop=stop, library="ak")


def reference(path: str, stream: str) -> tuple[ak.Array | None, list[str], dict]:
    """uproot's arrays of every branch of ``stream`` it can read, the names, and the others with why."""
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        with uproot.open(path) as f:
            obj = f[stream]
            stop = min(int(obj.num_entries), MAX_ENTRIES)
            readable, excluded = [], {}
            alone = _one_at_a_time(obj)
            began = time.monotonic()
            for name in _field_names(obj):
                if time.monotonic() - began > STREAM_SECONDS:
                    excluded[name] = f"uproot takes over {STREAM_SECONDS:g} s to read the stream's branches one by one"
                    continue
                signal.setitimer(signal.ITIMER_REAL, REFERENCE_SECONDS)
                try:
                    if alone is not None:  # uproot's name matching costs ~1 s per call on a huge tree
                        alone[name].array(entry_stop=stop, library="ak")
                        readable.append(name)
                        continue
                    arr = _read(obj, [name], stop)
                    if name not in arr.fields:
                        excluded[name] = "uproot's arrays() leaves it out"
                    else:
                        readable.append(name)
                except _Slow:
                    excluded[name] = f"uproot takes over {REFERENCE_SECONDS:g} s to read it"
                except Exception as exc:
                    excluded[name] = f"uproot cannot read it: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            if not readable:
                return None, [], excluded
            signal.setitimer(signal.ITIMER_REAL, 4 * REFERENCE_SECONDS)
            try:
                return _read(obj, readable, stop), readable, excluded
            except _Slow:
                slow = f"uproot takes over {4 * REFERENCE_SECONDS:g} s to read them together"
                return None, [], {**excluded, **{name: slow for name in readable}}
            except Exception as exc:  # uproot reads each alone but not all together
                why = f"uproot cannot read them together: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                return None, [], {**excluded, **{name: why for name in readable}}
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)


def _same_value(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return bool(a == b) and type(a) is type(b)


def same_array(a: ak.Array, b: ak.Array) -> bool:
    """Value for value, NaN equal to NaN; byte-compared when both pack to the same form."""
    if len(a) != len(b):
        return False
    fa, la, ba = ak.to_buffers(ak.to_packed(a))
    fb, lb, bb = ak.to_buffers(ak.to_packed(b))
    if fa == fb and ba.keys() == bb.keys():
        return all(np.asarray(ba[k]).tobytes() == np.asarray(bb[k]).tobytes() for k in ba)
    return _same_value(a.to_list(), b.to_list())


def served(host: str, port: int, stream: str, entries: int, timeout: float) -> tuple[ak.Array | None, str]:
    """Every record DDS serves of ``stream`` (all branches), concatenated; or None and why."""
    from clients import DDSClient, DDSError, DDSTimeout, Subscription

    got, ents = [], []
    n = 0
    deadline = time.monotonic() + timeout
    try:
        with DDSClient(host, port) as c:
            c.subscribe(Subscription(streams=(stream,), keep_up="all", start="oldest"))
            while n < entries and time.monotonic() < deadline:
                try:
                    b = c.next_batch(max_records=100_000, timeout=min(10.0, max(0.1, deadline - time.monotonic())))
                except DDSTimeout:
                    break
                got.append(b.arrays)
                ents.append(np.asarray(b.entries))
                n += len(b)
    except DDSError as exc:
        return None, f"{exc.message_type.name}: {str(exc)[:200]}"
    if not got:
        return None, "no record arrived"
    entries_seen = np.concatenate(ents)
    if not np.array_equal(entries_seen, np.arange(len(entries_seen))):
        return None, "entries out of order or repeated"
    return (got[0] if len(got) == 1 else ak.concatenate(got)), ""


def compare_file(path: str, host: str, port: int, timeout: float = 60.0) -> list[Outcome]:
    out = []
    name = os.path.basename(path)
    try:
        found = streams_of(path)
    except Exception as exc:
        return [Outcome(name, "", "", 0, status="unopenable", detail=f"uproot cannot open it: {exc}")]
    for stream, classname, entries in found:
        o = Outcome(name, stream, classname, entries)
        ref, readable, excluded = reference(path, stream)
        o.readable, o.excluded = len(readable), excluded
        if ref is None or (excluded and all("one by one" in why for why in list(excluded.values())[-1:])):
            o.status, o.detail = "unreadable", "uproot reads no branch of it" if ref is None else (
                f"uproot itself takes over {STREAM_SECONDS:g} s to read it")
            out.append(o)
            continue
        arrays, why = served(host, port, stream, entries, timeout)
        if arrays is None:
            o.status, o.detail = "missing", why
            out.append(o)
            continue
        fields = set(arrays.fields)
        o.served = len(fields & set(readable))
        lost = [b for b in readable if b not in fields]
        if len(arrays) < entries:
            o.status, o.detail = "missing", f"{len(arrays)} of {entries} entries"
        elif lost:
            o.status, o.detail = "partial", f"{len(lost)} branches not served, e.g. {lost[:3]}"
        else:
            wrong = [b for b in readable if not same_array(arrays[b][: len(ref)], ref[b])]
            o.status = "wrong" if wrong else "exact"
            o.detail = f"values differ in {wrong[:3]}" if wrong else ""
        out.append(o)
    return out


def run(files: list[str], timeout: float = 60.0) -> list[Outcome]:
    """Serve each file alone from its own data directory and compare every stream."""
    from dispatcher.testing import ServerProc

    results = []
    for path in files:
        with tempfile.TemporaryDirectory(prefix="ddscompat-") as tmp:
            data = os.path.join(tmp, "data")
            os.mkdir(data)
            copy = shutil.copy(path, data)
            with ServerProc(data, level="Warning", log_file=os.path.join(tmp, "server.log")) as srv:
                results.extend(compare_file(copy, srv.host, srv.port, timeout))
    return results


def summary(results: list[Outcome]) -> dict:
    counts: dict = {}
    for o in results:
        counts[o.status] = counts.get(o.status, 0) + 1
    counts["branches served"] = sum(o.served for o in results)
    counts["branches readable"] = sum(o.readable for o in results)
    return counts


def main(argv: list[str]) -> int:
    files = argv or sorted(str(p) for p in CORPUS.glob("*.root"))
    t0 = time.monotonic()
    results = []
    for path in files:
        for o in run([path]):
            results.append(o)
            line = f"{o.status:10s} {o.file[:48]:48s} {o.stream[:36]:36s} {o.served}/{o.readable} {o.detail}"
            print(line, flush=True)
    print(json.dumps(summary(results)))
    print(f"{len(files)} files in {time.monotonic() - t0:.0f} s")
    out = os.environ.get("DDS_COMPAT_JSON")  # every outcome, for a closer look
    if out:
        with open(out, "w") as f:
            json.dump([asdict(o) for o in results], f, indent=1)
    return 0 if all(o.status in ("exact", "unreadable", "unopenable") for o in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
