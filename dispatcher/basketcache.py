"""Baskets decompressed once for every child: a cache of decompressed blocks in shared memory.

Many clients reading the same data (a shift crew's monitors, a farm catching up)
make as many children decompress the same baskets: zlib is most of what a child
spends. The parent makes a private directory in ``/dev/shm`` (mode 0700); each
child wraps uproot's decompressors so that a block of at least ``MIN_BYTES``
is looked up there first, under the hash of its *compressed* bytes and its
length (xxh3, 128 bits): what is found is what that block decompresses to, in
whatever file and whatever state of it, so nothing can go stale. A block found
nowhere is decompressed and written (to a temporary name, then renamed: a
reader sees a whole block or none). Children that want the same block at the
same moment do not all decompress it: the first takes a lock file, the others
wait a few milliseconds for its result.

Writing costs a child about a tenth of the decompression, so children write
only while others are serving too (the parent keeps the count of children in a
shared page). The parent keeps the directory under its size budget, oldest
blocks first, and removes it when it stops.
"""

from __future__ import annotations

import logging
import mmap
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable

import xxhash

log = logging.getLogger("dds.cache")

#: blocks smaller than this (uncompressed) are decompressed every time: a lookup would cost as much
MIN_BYTES = 64 * 1024
#: default size budget of the directory
BUDGET_MB = 256
#: the directory's name: this prefix, the parent's pid, a random part
PREFIX = "dds-baskets-"
#: how long a child waits for another child decompressing the same block
WAIT_SECONDS = 0.05
#: a lock older than this is a child that died while decompressing
STALE_LOCK_SECONDS = 5.0
_COUNT = struct.Struct("q")


class Cache:
    """The parent's side: the directory, the shared count of children, the budget.

    Args:
        budget_mb (int): most megabytes kept; 0 turns the cache off.
        root (str): where to make the directory; default ``/dev/shm``.
    """

    def __init__(self, budget_mb: int = BUDGET_MB, root: str = "/dev/shm"):
        self.budget = budget_mb * 1024 * 1024
        self.directory: str | None = None
        self.count = mmap.mmap(-1, _COUNT.size)  # shared with every child forked after this
        if budget_mb > 0 and os.path.isdir(root) and os.access(root, os.W_OK):
            _remove_orphans(root)
            self.directory = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root)

    def set_children(self, n: int) -> None:
        _COUNT.pack_into(self.count, 0, n)

    def trim(self) -> None:
        """Delete the oldest blocks until the directory is under 80% of its budget (the parent, once a second)."""
        if self.directory is None:
            return
        entries = []
        total = 0
        try:
            with os.scandir(self.directory) as it:
                for e in it:
                    try:
                        st = e.stat()
                    except OSError:
                        continue
                    total += st.st_size
                    entries.append((st.st_mtime, st.st_size, e.path, e.name))
        except OSError as exc:
            log.warning("basket cache %s: %s", self.directory, exc)
            return
        now = time.time()
        for mtime, _size, path, name in entries:  # locks left by children that died
            if name.endswith(".lock") and now - mtime > STALE_LOCK_SECONDS:
                _unlink(path)
        if total <= self.budget:
            return
        entries.sort()
        for _mtime, size, path, _name in entries:
            if total <= 0.8 * self.budget:
                break
            _unlink(path)
            total -= size

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _remove_orphans(root: str) -> None:
    """Remove the directories of parents that died without removing theirs (SIGKILL): ours (same user), of a
    pid that no longer runs."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        parts = name[len(PREFIX):].split("-", 1)
        if not name.startswith(PREFIX) or not parts[0].isdigit():
            continue
        path = os.path.join(root, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(parts[0]), 0)
        except ProcessLookupError:
            log.info("removing %s, left by a server that is gone", path)
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive (and maybe not ours to signal), or not there any more
            continue


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --------------------------------------------------------------------------- child side


class Blocks:
    """A child's side: looks blocks up, and writes them while other children serve too.

    Args:
        directory (str): the parent's cache directory.
        children (callable): how many children the parent serves now.
    """

    def __init__(self, directory: str, children: Callable[[], int]):
        self.directory = directory
        self.children = children
        self.hits = self.misses = 0

    def decompressed(self, data, size: int, decompress: Callable[[], bytes]) -> bytes:
        if size < MIN_BYTES:
            return decompress()
        key = f"{xxhash.xxh3_128_hexdigest(data)}-{size}"
        path = os.path.join(self.directory, key)
        got = _read(path, size)
        if got is not None:
            self.hits += 1
            return got
        self.misses += 1
        if self.children() < 2:  # no one else to use it: not worth the write
            return decompress()
        lock = path + ".lock"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:  # another child is decompressing it: wait for it a little
            deadline = time.monotonic() + WAIT_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.0005)
                got = _read(path, size)
                if got is not None:
                    self.hits += 1
                    return got
            return decompress()
        except OSError:  # the directory is gone (the parent stopped) or full
            return decompress()
        os.close(fd)
        try:
            out = decompress()
            if len(out) == size:
                tmp = f"{path}.{os.getpid()}.tmp"
                try:
                    with open(tmp, "wb") as f:
                        f.write(out)
                    os.replace(tmp, path)
                except OSError:  # full: the parent trims it; serving goes on
                    _unlink(tmp)
            return out
        finally:
            _unlink(lock)


def _read(path: str, size: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read(size + 1)
    except OSError:
        return None
    return data if len(data) == size else None


def install(directory: str, count: mmap.mmap) -> Blocks:
    """In a child: route uproot's decompressors through the cache in ``directory``."""
    import uproot.compression as compression

    blocks = Blocks(directory, lambda: _COUNT.unpack_from(count, 0)[0])
    for name in ("_decompress_ZLIB", "_decompress_LZMA", "_decompress_LZ4", "_decompress_ZSTD"):
        codec = getattr(compression, name, None)
        if codec is None or "decompress" in vars(codec):
            continue
        original = codec.decompress

        def cached(data, uncompressed_bytes=None, _original=original):
            if uncompressed_bytes is None:
                return _original(data, uncompressed_bytes)
            return blocks.decompressed(data, uncompressed_bytes, lambda: _original(data, uncompressed_bytes))

        codec.decompress = cached
    return blocks
