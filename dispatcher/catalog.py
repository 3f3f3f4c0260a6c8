"""Which data files exist, in which order, and which one is open.

Every ``*.root`` file directly in the data directory is a data file; files are
ordered by name; the last is the open file (the DAQ may still append to it).
The directory is listed again only when its mtime changes (or within a second
of a change, as mtimes can be coarse), so many children polling the same
directory cost one ``stat`` each per poll. A directory that cannot be listed
shows no files; the trouble is logged when it starts and when it ends, not at
every poll.
"""

from __future__ import annotations

import logging
import os
import reprlib
import time

from .logsetup import warn_once

log = logging.getLogger("dds.catalog")


_names = reprlib.Repr()
_names.maxstring = 100


def quote(name: object) -> str:
    """A name a peer sent, cut short for messages and logs."""
    return _names.repr(name)


class NoFileError(LookupError):
    """A file name that is not a data file of this directory."""


def plain_name(name: object, also_not: str = "") -> None:
    """NoFileError unless ``name`` is a plain file name: a string of 1 to 255 characters, no separator,
    no NUL, not ``.`` or ``..``, none of the characters ``also_not``."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise NoFileError(f"invalid file name {quote(name)}")
    if any(c in name for c in "\x00/\\" + also_not) or name in (".", "..") or os.path.isabs(name):
        raise NoFileError(f"file name {quote(name)} is not a plain name inside the data directory")


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


class Catalog:
    """The data files of one directory.

    Args:
        data_dir (str): the data directory.
    """

    # Directory mtimes can be coarse: re-list while the last change is this recent.
    SETTLE_SECONDS = 1.0

    def __init__(self, data_dir: str):
        self.root = os.path.realpath(data_dir)
        self._stamp: tuple[int, int] | None = None
        self._listed_at = 0.0
        self._files: list[str] = []
        self._trouble = False  # the directory could not be listed last time

    def files(self) -> list[str]:
        """Data file names, oldest first; none while the directory cannot be listed."""
        try:
            files = self._listing()
        except OSError as exc:
            if not self._trouble:  # once, not at every poll
                log.warning("%s", self._trouble_text(exc))
                self._trouble = True
            return self._while_unlisted(exc)
        if self._trouble:
            log.warning("data directory %s is readable again", self.root)
            self._trouble = False
        return files

    def _trouble_text(self, exc: OSError) -> str:
        return f"cannot list data directory {self.root}: {exc}"

    def _while_unlisted(self, exc: OSError) -> list[str]:
        """What ``files`` says while the directory cannot be listed: no file."""
        return []

    def _listing(self) -> list[str]:
        """Data file names, oldest first. Raises OSError if the directory is unreadable."""
        st = os.stat(self.root)
        stamp = (st.st_mtime_ns, st.st_ino)
        now = time.time()
        if stamp != self._stamp or self._listed_at - st.st_mtime < self.SETTLE_SECONDS:
            self._files = self._list()
            self._stamp = stamp
            self._listed_at = now
        return self._files

    def _list(self) -> list[str]:
        names = []
        with os.scandir(self.root) as it:
            for entry in it:
                if not entry.name.endswith(".root") or entry.name.startswith("."):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    if entry.is_symlink() and not _inside(self.root, os.path.realpath(entry.path)):
                        warn_once(entry.path, "outside", "%s leads outside the data directory: not a data file",
                                  entry.name, logger=log)
                        continue
                except OSError as exc:
                    warn_once(entry.path, "unlisted", "%s cannot be looked at (%s): not a data file", entry.name,
                              exc, logger=log)
                    continue
                names.append(entry.name)
        names.sort()
        return names

    def open_file(self) -> str | None:
        """The newest data file, the one the DAQ may still append to (None: no file)."""
        files = self.files()
        return files[-1] if files else None

    def is_open(self, name: str | None) -> bool:
        """Whether ``name`` is the open file (the newest one)."""
        return name is not None and self.open_file() == name

    def next_after(self, name: str | None) -> str | None:
        """The first data file that sorts after ``name`` (which may have been deleted)."""
        for f in self.files():
            if name is None or f > name:
                return f
        return None

    def path(self, name: str) -> str:
        """The full path of data file ``name``; :class:`NoFileError` for anything else.

        A name must be a plain file name directly in the data directory: no
        separators, no ``..``, no absolute path, no NUL, no symlink leading out.
        """
        plain_name(name)
        full = os.path.join(self.root, name)
        try:
            inside = _inside(self.root, os.path.realpath(full))
        except ValueError:  # a lone surrogate no file system name decodes to
            raise NoFileError(f"file name {quote(name)} is not a valid file name") from None
        if not inside:
            raise NoFileError(f"file {quote(name)} leads outside the data directory")
        if name not in self._listing():
            raise NoFileError(f"no data file {quote(name)} in {self.root}")
        return full
