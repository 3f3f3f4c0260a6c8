"""Log levels Verbose..Fatal on top of ``logging``, and one line format for parent and children.

Every line names the process (``ddsparentserver[pid]`` or ``ddschildserver[pid]
HOST:PORT``) so the parent's and the children's lines can share one file.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time

VERBOSE = 5
LEVELS = {
    "verbose": VERBOSE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
}
logging.addLevelName(VERBOSE, "VERBOSE")
logging.addLevelName(logging.CRITICAL, "FATAL")

_ident = {"name": "dds"}


class _IdentFilter(logging.Filter):
    def filter(self, record):
        record.ident = _ident["name"]
        return True


def parse_level(text: str) -> int:
    try:
        return LEVELS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {text!r}; valid: Verbose, Debug, Info, Warning, Error, Fatal") from None


def set_ident(name: str) -> None:
    """Name the process in every following log line (called again in each child)."""
    _ident["name"] = name


def configure(level: int, log_file: str | None = None) -> None:
    # WatchedFileHandler re-opens a log file that was removed or rotated under it.
    # backslashreplace: a peer's lone surrogate in a logged name must not make the handler raise
    handler = (logging.handlers.WatchedFileHandler(log_file, errors="backslashreplace") if log_file
               else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(ident)s %(levelname)s: %(message)s"))
    handler.addFilter(_IdentFilter())
    root = logging.getLogger("dds")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


#: a process logs at most one traceback per this many seconds; the others are one line each
TRACEBACK_INTERVAL = 60.0
_last_traceback = [float("-inf")]


def bug(logger: logging.Logger, message: str, *args: object) -> None:
    """Log an exception that is our own bug (call it in an ``except`` block): with its traceback
    at most once per TRACEBACK_INTERVAL seconds, so a request that keeps hitting it cannot flood
    the log; in between as one line naming the exception."""
    now = time.monotonic()
    if now - _last_traceback[0] >= TRACEBACK_INTERVAL:
        _last_traceback[0] = now
        logger.exception(message, *args)
        return
    exc = sys.exc_info()[1]
    logger.error(message + " (%s: %.200s; traceback logged at most every %.0f s)", *args,
                 type(exc).__name__, exc, TRACEBACK_INTERVAL)


_told: set[tuple[str, str]] = set()  # (file path, what) already warned about in this process


def warn_once(path: str, what: str, message: str, *args, logger: logging.Logger | None = None) -> None:
    """One Warning per process about ``what`` of the file at ``path`` (the others are dropped)."""
    if (path, what) not in _told:
        _told.add((path, what))
        (logger or logging.getLogger("dds.tail")).warning(message, *args)
