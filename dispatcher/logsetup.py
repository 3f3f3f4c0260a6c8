"""Log levels Verbose..Fatal on top of ``logging``, and one line format for parent and children.

Every line names the process (``ddsparentserver[pid]`` or ``ddschildserver[pid]
HOST:PORT``) so the parent's and the children's lines can share one file.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

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
    handler = logging.handlers.WatchedFileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(ident)s %(levelname)s: %(message)s"))
    handler.addFilter(_IdentFilter())
    root = logging.getLogger("dds")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
