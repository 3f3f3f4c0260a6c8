"""A data directory on an XRootD server: ``-d root://HOST[:PORT]//path/to/dir``.

The DAQ host exports its data directory with XRootD; DDS servers anywhere read
it from there with the same rules as a local directory. This module is the
XRootD side of that: listing the directory (:class:`RemoteCatalog`), the stat
signature of one file (:func:`stat`), and the uproot source files are opened
with (:func:`source`: uproot's ``XRootDSource``, which batches the baskets of a
read into vector reads). Local paths never come here.

XRootD's own client waits minutes for a server that is down (it retries the
connection for two minutes by default); a dispatcher must notice sooner, so the
windows are shortened before the first request. A server that does not answer
raises :class:`Unavailable`: the session waits for it, and never takes it for a
file that is gone or torn (that would skip records).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from .catalog import Catalog, NoFileError, plain_name, quote

log = logging.getLogger("dds.remote")

SCHEME = "root://"
#: seconds an XRootD request may take before the server counts as unavailable
REQUEST_SECONDS = 5
#: re-list a remote directory at most this often (a listing is a round trip; a local one is a stat)
LIST_SECONDS = 0.2
#: XRootD's "no such file" error number (kXR_NotFound)
_NOT_FOUND = 3011
_configured = False


class Unavailable(OSError):
    """The XRootD server did not answer (down, restarting, network lost): wait, do not skip."""


def is_remote(path: str) -> bool:
    """True for an XRootD URL (``root://...``)."""
    return isinstance(path, str) and path.startswith(SCHEME)


def split_url(url: str) -> tuple[str, str]:
    """``("root://HOST:PORT", "/path")`` of ``root://HOST:PORT//path``.

    Raises:
        ValueError: not an XRootD URL with a host and an absolute path.
    """
    if not is_remote(url):
        raise ValueError(f"not an XRootD URL: {url!r}")
    rest = url[len(SCHEME):]
    host, slash, path = rest.partition("/")
    if not host or not slash or not path.startswith("/"):
        raise ValueError(f"an XRootD data directory is root://HOST[:PORT]//absolute/path, not {url!r}")
    path = "/" + path.strip("/")
    return SCHEME + host, path


def _client() -> Any:
    global _configured
    try:
        from XRootD import client
    except ImportError:
        raise ImportError("reading root:// needs the XRootD Python bindings: pip install 'dds[xrootd]' "
                          "(the xrootd and fsspec-xrootd packages)") from None
    if not _configured:
        # give up on an unreachable server in seconds, not minutes
        client.EnvPutInt("ConnectionWindow", 2)
        client.EnvPutInt("ConnectionRetry", 1)
        client.EnvPutInt("RequestTimeout", REQUEST_SECONDS)
        client.EnvPutInt("StreamErrorWindow", 2)
        _configured = True
    return client


def _fail(status: Any, what: str) -> OSError:
    if getattr(status, "errno", 0) == _NOT_FOUND:
        return FileNotFoundError(f"{what}: {status.message.strip()}")
    return Unavailable(f"{what}: {status.message.strip()}")


def stat(url: str) -> tuple[int, int, int]:
    """``(id, size, mtime in ns)`` of the file at ``url``, as ``os.stat`` gives the local signature.

    Raises:
        FileNotFoundError: no such file. Unavailable: the server did not answer.
    """
    server, path = split_url(url)
    fs = _client().FileSystem(server)
    status, info = fs.stat(path, timeout=REQUEST_SECONDS)
    if not status.ok:
        raise _fail(status, f"stat {url}")
    return (hash(info.id) & 0x7FFFFFFFFFFF, int(info.size), int(info.modtime) * 1_000_000_000)


def source() -> Any:
    """The uproot source class for XRootD files: vector reads, one request per read of many baskets."""
    import uproot

    return uproot.source.xrootd.XRootDSource


class RemoteCatalog(Catalog):
    """The data files of a directory on an XRootD server.

    Args:
        url (str): ``root://HOST[:PORT]//path/to/dir``.
    """

    def __init__(self, url: str):
        self.server, self.dir = split_url(url)
        super().__init__(self.dir)
        self.root = f"{self.server}/{self.dir}"  # the URL: what messages and paths are made of
        self._fs: Any = None

    def _trouble_text(self, exc: OSError) -> str:
        if isinstance(exc, Unavailable):
            return f"XRootD server of {self.root} does not answer ({exc}); waiting for it"
        return super()._trouble_text(exc)

    def _while_unlisted(self, exc: OSError) -> list[str]:
        """While the server does not answer: the last listing, so the open file is not taken for
        closed (it would then be served as final and its later records lost)."""
        return self._files if isinstance(exc, Unavailable) else []

    def _listing(self) -> list[str]:
        now = time.monotonic()
        if now - self._listed_at >= LIST_SECONDS or not self._files:
            self._files = self._list()
            self._listed_at = now
        return self._files

    def _list(self) -> list[str]:
        client = _client()
        if self._fs is None:
            self._fs = client.FileSystem(self.server)
        from XRootD.client.flags import DirListFlags, StatInfoFlags

        status, listing = self._fs.dirlist(self.dir, DirListFlags.STAT, timeout=REQUEST_SECONDS)
        if not status.ok:
            raise _fail(status, f"list {self.root}")
        names = []
        for entry in listing:
            name = entry.name
            if not name.endswith(".root") or name.startswith(".") or "/" in name:
                continue
            info = entry.statinfo
            if info is not None and info.flags & (StatInfoFlags.IS_DIR | StatInfoFlags.OTHER):
                continue
            names.append(name)
        names.sort()
        return names

    def path(self, name: str) -> str:
        """The URL of data file ``name``; :class:`NoFileError` for anything but a plain name listed here."""
        plain_name(name, also_not="?#")  # in a URL they would start its query or fragment
        if name not in self._listing():
            raise NoFileError(f"no data file {quote(name)} in {self.root}")
        return f"{self.root}/{name}"


def make_catalog(data_dir: str) -> Catalog:
    """The catalog of ``data_dir``: local, or on XRootD for a ``root://`` URL."""
    return RemoteCatalog(data_dir) if is_remote(data_dir) else Catalog(data_dir)


def check_data_dir(data_dir: str) -> str | None:
    """Why ``data_dir`` cannot be served (None: it can), for the command line."""
    if not is_remote(data_dir):
        return None if os.path.isdir(data_dir) else f"data directory {data_dir!r} does not exist or is not a directory"
    try:
        split_url(data_dir)
        _client()
    except (ValueError, ImportError) as exc:
        return str(exc)
    return None
