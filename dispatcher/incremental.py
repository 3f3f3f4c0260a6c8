"""Follow the TTrees of an open data file as uproot's writer patches them in place.

After uproot parsed the file once, a poll reads only what an append changes, and
writes the new values into uproot's own TTree and TBranch objects, so that its
reading (see :mod:`dispatcher.baskets`) finds the new baskets. Where the bytes are:
ROOT's TTree v20 and TBranch v13 streamers, as uproot reads them
(``uproot/models/TTree.py``, ``uproot/models/TBranch.py``) and as its writer
patches them (``write_updates`` in ``uproot/writing/_cascadetree.py``):

- the TTree's fEntries, fTotBytes, ... (``_ttree20_format1``) just after its TAttMarker base;
- a TBranch's fCompress .. fEntryNumber (``_tbranch13_format1``) just after its TAttFill
  base, its fOffset .. fZipBytes (``_tbranch13_format2``) just before its fBranches, and,
  after its fBaskets, three arrays of fMaxBaskets slots, each after a one-byte "speedbump":
  fBasketBytes (int32), fBasketEntry (int64, one more slot used), fBasketSeek (int64).

An append writes the new baskets, then the TTree's fEntries, then each branch's
counters and new slots. A TTree whose slots are full is written anew elsewhere, and
ROOT's AutoSave writes a new key (or cycle): either changes the directory's key list.

A poll (:meth:`Follower.poll`) first compares the *guard*: the file header without
the fields every write changes (end of file, free list), the header and key list of
each directory that holds a followed tree, and each tree's key header. Any change:
:class:`Stale` (parse the file anew). Then, per tree, fEntries: the same, nothing new;
more: each branch's counters and new slots, checked (every branch has the tree's
entries, its slots lead from the old end to the new one, the key of each new basket
says it is that basket; else :class:`Torn`: the writer is mid-append, look again in
a moment), then the guard once more. Only then are the new values written into
uproot's objects.

Followed: local files whose streams are all TTrees written the way uproot writes
them (uncompressed TTree key, TBranch v13, no baskets embedded in the metadata).
Anything else (RNTuples, ROOT's compressed TTree keys, TBranchElements) is parsed
anew on every change.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uproot
from uproot.models.TBranch import _tbranch13_format1 as BRANCH_HEAD1
from uproot.models.TBranch import _tbranch13_format2 as BRANCH_HEAD2
from uproot.models.TTree import _ttree20_format1 as TREE_HEAD
from uproot.reading import (
    _directory_format_big,
    _directory_format_small,
    _file_header_fields_big,
    _file_header_fields_small,
    _key_format_big,
    _key_format_small,
)

#: guard regions closer than this are read with one read
MERGE_GAP = 4096
#: bytes of a TBranch's fBaskets when it holds no basket (uproot's writer: an empty TObjArray), and more
MAX_EMPTY_BASKETS = 64
#: a TKey with a version above this has 64-bit seeks (ROOT's TKey::Streamer)
BIG_KEY_VERSION = 1000
#: the file header fields every write changes (fEND, fSeekFree, fNbytesFree, nfree): bytes 12 to 28
#: (32-bit) or 12 to 36 (64-bit), after magic, fVersion, fBEGIN (``uproot.reading`` header formats)
_HEADER_MUTABLE = {_file_header_fields_small: (12, 28), _file_header_fields_big: (12, 36)}
_I4 = np.dtype(">i4")
_I8 = np.dtype(">i8")


class _PreadResource(uproot.source.file.FileResource):
    """uproot's file handle, reading with ``pread``: a buffered handle serves bytes again from its
    read-ahead, as they were when it read them, and a file that grows in place changes under it."""

    def get(self, start: int, stop: int) -> bytes:
        return os.pread(self._file.fileno(), stop - start, start)


class FreshFileSource(uproot.source.file.MultithreadedFileSource):
    """uproot's local file source (``handler=`` of ``uproot.open``), every read fresh from the file."""

    ResourceClass = _PreadResource

    def _open(self) -> None:
        if self._use_threads:
            self._executor = uproot.source.futures.ResourceThreadPoolExecutor(
                [_PreadResource(self._file_path) for _ in range(self._num_workers)])
        else:
            self._executor = uproot.source.futures.ResourceTrivialExecutor(_PreadResource(self._file_path))
        self._num_bytes = os.path.getsize(self._file_path)


class Stale(Exception):
    """What the follower relies on changed (or cannot be read): parse the file anew."""


class Torn(Exception):
    """The writer was in the middle of an append: look again in a moment."""


@dataclass
class _Branch:
    model: Any
    head1: int  # file position of _tbranch13_format1
    head2: int  # of _tbranch13_format2
    sizes: int  # of fBasketBytes[0]; fBasketEntry[0] and fBasketSeek[0] follow, each after a speedbump
    slots: int  # fMaxBaskets
    baskets: int  # fWriteBasket, as applied
    layout: bytes  # fBaskets (empty) and the first speedbump: a tree written anew in place shows here

    @property
    def entries_at(self) -> int:
        return self.sizes + 4 * self.slots + 1

    @property
    def seeks_at(self) -> int:
        return self.entries_at + 8 * self.slots + 1


@dataclass
class _Tree:
    model: Any
    head: int  # file position of _ttree20_format1
    entries: int  # as applied
    branches: list[_Branch] = field(default_factory=list)


@dataclass
class _Growth:
    """What one poll found for one tree, before it is applied."""

    entries: int
    head: tuple
    branches: list[tuple[tuple, tuple, np.ndarray, np.ndarray, np.ndarray]]  # heads, sizes, entries, seeks


class Follower:
    """The TTrees of one open local file, kept up to date in place.

    Made by :func:`attach`; ``trees`` are the followed streams by name.
    """

    def __init__(self, fd: int, inode: int, guard: list[tuple[int, bytes]], trees: dict[str, _Tree]):
        self._fd = fd
        self.inode = inode
        self.trees = trees
        self._guard = guard
        self._spans = _spans([(pos, pos + len(data)) for pos, data in guard])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # ------------------------------------------------------------------ reading

    def _read(self, pos: int, n: int) -> bytes:
        data = os.pread(self._fd, n, pos)
        if len(data) != n:
            raise Torn(f"{n} bytes at {pos} are not written yet")
        return data

    def _check_guard(self) -> None:
        for start, stop in self._spans:
            data = self._read(start, stop - start)
            for pos, expected in self._guard:
                at = pos - start
                if 0 <= at and pos + len(expected) <= stop and data[at : at + len(expected)] != expected:
                    raise Stale(f"the file's structure changed at byte {pos}")

    def _branch_heads(self, tree: _Tree) -> list[tuple[tuple, tuple]]:
        return [(BRANCH_HEAD1.unpack(self._read(b.head1, BRANCH_HEAD1.size)),
                 BRANCH_HEAD2.unpack(self._read(b.head2, BRANCH_HEAD2.size))) for b in tree.branches]

    def _array(self, pos: int, dtype: np.dtype, start: int, stop: int) -> np.ndarray:
        return np.frombuffer(self._read(pos + start * dtype.itemsize, (stop - start) * dtype.itemsize), dtype)

    def _growth(self, tree: _Tree, size: int) -> _Growth | None:
        """What ``tree`` gained since it was last applied (None: nothing). Raises Stale or Torn."""
        head = TREE_HEAD.unpack(self._read(tree.head, TREE_HEAD.size))
        entries = head[0]
        if entries == tree.entries:
            return None  # the usual poll: one read per tree, not two per branch
        if entries < tree.entries:
            raise Stale(f"a tree shrank from {tree.entries} to {entries} entries")
        found = []
        for b, (h1, h2) in zip(tree.branches, self._branch_heads(tree)):
            write_basket, entry_number = h1[3], h1[4]
            slots, branch_entries = h2[1], h2[3]
            if slots != b.slots:
                raise Stale(f"branch {b.model.name} has {slots} basket slots, was {b.slots}")
            if not (branch_entries == entry_number == entries and b.baskets <= write_basket < slots):
                raise Torn(f"branch {b.model.name} is not at entry {entries} yet")
            if self._read(b.sizes - len(b.layout), len(b.layout)) != b.layout:
                raise Stale(f"branch {b.model.name} is laid out anew")
            k, n = b.baskets, write_basket
            sizes = self._array(b.sizes, _I4, k, n)
            starts = self._array(b.entries_at, _I8, k, n + 1)
            seeks = self._array(b.seeks_at, _I8, k, n)
            if (starts[0] != tree.entries or starts[-1] != entries or np.any(np.diff(starts) < 0)
                    or np.any(sizes <= 0) or np.any(seeks <= 0) or np.any(seeks + sizes > size)):
                raise Torn(f"the new basket slots of branch {b.model.name} are not all written yet")
            for seek, nbytes in zip(seeks.tolist(), sizes.tolist()):
                self._check_basket_key(seek, nbytes)
            found.append((h1, h2, sizes, starts, seeks))
        return _Growth(entries, head, found)

    def _check_basket_key(self, seek: int, nbytes: int) -> None:
        """The TKey at ``seek`` is that of a basket of ``nbytes`` bytes written there."""
        data = self._read(seek, _key_format_big.size)
        key = _key_format_small.unpack_from(data)
        if key[1] > BIG_KEY_VERSION:
            key = _key_format_big.unpack_from(data)
        if key[0] != nbytes or key[6] != seek:
            raise Torn(f"no basket key of {nbytes} bytes at {seek} yet")

    # ------------------------------------------------------------------ polling

    def poll(self) -> dict[str, tuple[int, list[int] | None]]:
        """Bring the followed trees up to date: ``{stream: (entries, new common basket starts)}``
        for those that grew (the starts after the old end up to the new one, where every branch
        starts a basket; None when not known). Raises Stale or Torn; then nothing was changed."""
        self._check_guard()
        size = os.fstat(self._fd).st_size
        grown = {name: g for name, tree in self.trees.items() if (g := self._growth(tree, size)) is not None}
        if not grown:
            return {}
        # A tree moved while we read it shows in the guard (its old place is reused only after the
        # directory points to the new one). A writer that appended again meanwhile does no harm: it
        # writes only slots beyond those read, and what was read was checked to be one whole append.
        self._check_guard()
        return {name: (g.entries, self._apply(self.trees[name], g)) for name, g in grown.items()}

    @staticmethod
    def _apply(tree: _Tree, g: _Growth) -> list[int] | None:
        """Write ``g`` into uproot's objects; the new common basket starts."""
        model = tree.model
        for name, value in zip(("fEntries", "fTotBytes", "fZipBytes"), g.head[:3]):
            model._members[name] = value
        common: set[int] | None = None
        known = True
        for b, (h1, h2, sizes, starts, seeks) in zip(tree.branches, g.branches):
            m, k, n = b.model, b.baskets, h1[3]
            for name, value in zip(("fCompress", "fBasketSize", "fEntryOffsetLen", "fWriteBasket", "fEntryNumber"), h1):
                m._members[name] = value
            for name, value in zip(("fOffset", "fMaxBaskets", "fSplitLevel", "fEntries", "fFirstEntry", "fTotBytes",
                                    "fZipBytes"), h2):
                m._members[name] = value
            m._members["fBasketBytes"][k:n] = sizes
            m._members["fBasketEntry"][k : n + 1] = starts
            m._members["fBasketSeek"][k:n] = seeks
            m._num_normal_baskets = b.baskets = n
            if n and not k:
                known = False  # a branch with its first baskets: the common starts before are not known
            elif n:
                new = set(starts[1:].tolist())
                common = new if common is None else common & new
        tree.entries = g.entries
        return sorted(common) if known and common is not None else None


def _spans(regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``regions`` merged where they are closer than MERGE_GAP."""
    out: list[list[int]] = []
    for start, stop in sorted(regions):
        if out and start - out[-1][1] < MERGE_GAP:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return [(a, b) for a, b in out]


# --------------------------------------------------------------------------- attaching


def _end_of(model: Any) -> int:
    """Where a model read by uproot ends in its chunk (its start plus its byte count)."""
    return model._cursor.index + model._num_bytes


def _follow_tree(tree: Any, key: Any) -> _Tree | None:
    """Where the fields of ``tree`` (read from ``key``) are in the file, each checked against what
    uproot read; None if the tree is not laid out as this module expects."""
    if type(tree) is not uproot.models.TTree.Model_TTree_v20 or key.is_compressed:
        return None
    raw = np.frombuffer(tree.chunk.raw_data, np.uint8)
    if len(raw) != key.data_uncompressed_bytes:
        return None
    base = key.data_cursor.index  # the key's data is stored as is: chunk position + base = file position
    head = _end_of(tree._bases[3])  # after TAttMarker
    if TREE_HEAD.unpack_from(raw, head)[0] != tree.member("fEntries"):
        return None
    out = _Tree(tree, base + head, int(tree.member("fEntries")))
    for branch in tree.itervalues(recursive=True):
        b = _follow_branch(branch, tree, raw, base, out.entries)
        if b is None:
            return None
        out.branches.append(b)
    return out


def _follow_branch(branch: Any, tree: Any, raw: np.ndarray, base: int, entries: int) -> _Branch | None:
    if type(branch) is not uproot.models.TBranch.Model_TBranch_v13 or branch._embedded_baskets != []:
        return None
    members = branch._members
    head1 = _end_of(branch._bases[1])  # after TAttFill
    head2 = branch.member("fBranches")._cursor.index - BRANCH_HEAD2.size
    cursor = branch._cursor_baskets.copy()
    if not cursor.skip_over(tree.chunk, {}):  # fBaskets, with its byte count
        return None
    slots, n = int(members["fMaxBaskets"]), int(members["fWriteBasket"])
    layout = raw[branch._cursor_baskets.index : cursor.index + 1].tobytes()
    if len(layout) > MAX_EMPTY_BASKETS:  # baskets kept in the metadata (ROOT's AutoSave): not patched in place
        return None
    b = _Branch(branch, base + head1, base + head2, base + cursor.index + 1, slots, n, layout)
    sizes, starts, seeks = (members[name] for name in ("fBasketBytes", "fBasketEntry", "fBasketSeek"))
    local = b.sizes - base
    at = {"fBasketBytes": local, "fBasketEntry": b.entries_at - base, "fBasketSeek": b.seeks_at - base}
    if (b.seeks_at - base + 8 * slots > len(raw)
            or BRANCH_HEAD1.unpack_from(raw, head1) != tuple(members[k] for k in (
                "fCompress", "fBasketSize", "fEntryOffsetLen", "fWriteBasket", "fEntryNumber"))
            or BRANCH_HEAD2.unpack_from(raw, head2) != tuple(members[k] for k in (
                "fOffset", "fMaxBaskets", "fSplitLevel", "fEntries", "fFirstEntry", "fTotBytes", "fZipBytes"))
            or any(len(members[k]) != slots for k in at)
            or not np.array_equal(np.frombuffer(raw[at["fBasketBytes"]:], _I4, slots), sizes)
            or not np.array_equal(np.frombuffer(raw[at["fBasketEntry"]:], _I8, slots), starts)
            or not np.array_equal(np.frombuffer(raw[at["fBasketSeek"]:], _I8, slots), seeks)
            or members["fEntries"] != entries or branch._num_normal_baskets != n or n >= slots
            or starts[n] != entries):
        return None
    for k in at:  # uproot's arrays may be views of the read-only chunk: ours from now on
        members[k] = np.array(members[k])
    return b


class _Reader:
    def __init__(self, fd: int):
        self.fd = fd

    def __call__(self, pos: int, n: int) -> bytes:
        data = os.pread(self.fd, n, pos)
        if len(data) != n:
            raise Stale(f"{n} bytes at {pos} cannot be read")
        return data


def attach(path: str, inode: int, f: Any, streams: dict[str, Any]) -> Follower | None:
    """A follower of ``streams`` (name -> the object uproot read) of the file ``f`` open at ``path``,
    whose inode was ``inode`` when it was opened; None when some stream cannot be followed
    (it is parsed anew on every change then)."""
    if not streams:
        return None
    keys, trees = {}, {}
    for name, obj in streams.items():
        if not isinstance(obj, uproot.behaviors.TTree.TTree):
            return None
        key = f.key(name)
        tree = _follow_tree(obj, key)
        if tree is None:
            return None
        keys[name], trees[name] = key, tree
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_ino != inode:
            raise Stale("the file was replaced")
        read = _Reader(fd)
        guard = _guard_regions(read, f, list(keys.values()))
    except (Stale, OSError, struct.error):
        os.close(fd)
        return None
    return Follower(fd, inode, guard, trees)


def _guard_regions(read: _Reader, f: Any, keys: list[Any]) -> list[tuple[int, bytes]]:
    """The byte regions whose content must not change while the trees of ``keys`` are followed,
    with their content now. Each is checked against what uproot read when it opened the file
    (Stale if it differs: the writer moved something meanwhile)."""
    raw_header = read(0, _file_header_fields_big.size)
    version = struct.unpack_from(">i", raw_header, 4)[0]
    header = _file_header_fields_big if version >= 1000000 else _file_header_fields_small
    lo, hi = _HEADER_MUTABLE[header]
    fields = header.unpack_from(raw_header)
    ours = f.file
    if (fields[1], fields[2], fields[10]) != (ours.fVersion, ours.fBEGIN, ours.fSeekInfo):
        raise Stale("the file header changed since it was opened")
    guard = [(0, raw_header[:lo]), (hi, raw_header[hi : header.size])]
    dirs: dict[int, Any] = {}
    for key in keys:
        d = key.parent
        while isinstance(d, uproot.reading.ReadOnlyDirectory):
            dirs[d.cursor.index] = d
            d = d.parent
    listed: dict[int, bytes] = {}
    for pos, d in dirs.items():
        fmt = _directory_format_big if d.fVersion > BIG_KEY_VERSION else _directory_format_small
        raw = read(pos, fmt.size)
        if fmt.unpack_from(raw)[-1] != d.fSeekKeys or fmt.unpack_from(raw)[3] != d.fNbytesKeys:
            raise Stale("a directory's key list moved since the file was opened")
        guard.append((pos, raw))
        listed[d.fSeekKeys] = read(d.fSeekKeys, d.fNbytesKeys)
        guard.append((d.fSeekKeys, listed[d.fSeekKeys]))
    for key in keys:
        # the directory still lists the key uproot read the tree from (ReadOnlyKey.cursor: where in the list)
        d = key.parent
        raw = listed[d.fSeekKeys]
        at = key.cursor.index - d.fSeekKeys
        fmt = _key_format_big if key.fVersion > BIG_KEY_VERSION else _key_format_small
        if not 0 <= at <= len(raw) - fmt.size:
            raise Stale("a tree's key is not in its directory's key list")
        entry = fmt.unpack_from(raw, at)
        if entry != (key.fNbytes, key.fVersion, key.fObjlen, key.fDatime, key.fKeylen, key.fCycle, key.fSeekKey,
                     key.fSeekPdir):
            raise Stale("a tree's key changed since the file was opened")
        guard.append((key.fSeekKey, read(key.fSeekKey, key.fKeylen)))
    return guard
