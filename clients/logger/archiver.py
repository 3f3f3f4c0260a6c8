"""Copy each closed output file to an archive directory, verified by checksum, retrying with backoff.

Like NA48's CDR and HERA-B's archiver: a closed file is copied under a temporary
name, fsynced, read back and compared (SHA-256) with the local file, then renamed
to its final name; only then is it marked archived in the journal, and only then
(with ``--delete-after-archive``) is the local copy deleted. A destination that
fails (missing, full, unreachable mount) is retried with a doubling wait, and
the failure is logged each time. A restart finishes what the journal says is
still to do; a copy already in place with the right checksum is not made twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from pathlib import Path

from .store import Store
from .writer import fsync_dir

log = logging.getLogger("ddslogger")

#: first wait after a failed copy, in seconds (then doubled up to the maximum)
FIRST_BACKOFF = 0.25


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def archive_one(src: Path, dest_dir: Path) -> str:
    """Copy ``src`` into ``dest_dir``, verified; returns its SHA-256.

    Raises:
        OSError: the copy failed. ValueError: the copy read back differs from ``src``.
    """
    want = sha256_of(src)
    final = dest_dir / src.name
    if final.exists() and sha256_of(final) == want:
        return want  # copied before a restart, not yet marked
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = dest_dir / f".{src.name}.part"
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())
    got = sha256_of(tmp)
    if got != want:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"archive copy {tmp} has SHA-256 {got}, the local file {src} has {want}")
    os.replace(tmp, final)
    fsync_dir(dest_dir)
    return want


class Archiver(threading.Thread):
    """The archiving thread: archives every closed output the journal lists as not archived.

    Args:
        outdir (Path): the output directory.
        dest (Path): the archive directory.
        delete_after (bool): delete the local file once its verified copy exists.
        max_backoff (float): longest wait between retries, in seconds.
    """

    def __init__(self, outdir: Path, dest: Path, delete_after: bool, max_backoff: float = 60.0):
        super().__init__(name="ddslogger-archiver", daemon=True)
        self.outdir = Path(outdir)
        self.dest = Path(dest)
        self.delete_after = delete_after
        self.max_backoff = max_backoff
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.failures = 0
        self.drain = False

    def stop(self, drain: bool = False) -> None:
        """End the thread; with ``drain``, after one more attempt at what is due (files closed at a stop)."""
        self.drain = drain
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        store = Store(self.outdir)
        try:
            backoff = FIRST_BACKOFF
            while not self.stopping.is_set():
                if self._pass(store):
                    backoff = FIRST_BACKOFF
                    self.wake.wait(1.0)
                else:
                    self.failures += 1
                    self.wake.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                self.wake.clear()
            if self.drain:
                self._pass(store, draining=True)
        finally:
            store.close()

    def _pass(self, store: Store, draining: bool = False) -> bool:
        """Archive (and delete) what is due; False when the destination failed."""
        for name in store.to_archive():
            if self.stopping.is_set() and not draining:
                return True
            try:
                sha = archive_one(self.outdir / name, self.dest)
            except (OSError, ValueError) as exc:
                log.warning("archiving %s to %s failed, will retry: %s", name, self.dest, exc)
                return False
            store.mark_archived(name, sha)
            log.info("archived %s to %s (sha256 %s)", name, self.dest, sha[:16])
        if self.delete_after:
            for name in store.to_delete():
                (self.outdir / name).unlink(missing_ok=True)
                fsync_dir(self.outdir)
                store.mark_deleted(name)
                log.info("deleted local %s: its verified copy is in %s", name, self.dest)
        return True
