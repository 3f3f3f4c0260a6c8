"""``ddslogger``: log a subscription into ROOT files, or ``--find`` a record in the event directory.

Exit status: 0 after a normal stop (SIGTERM, SIGINT) or a found record; 1 when
the logger cannot run (a refused subscription, a journal for other options) or
``--find`` finds nothing; 2 for a usage error.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from .options import LoggerOptions, parse
from .store import DB_NAME, Store

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_LEVELS = {"verbose": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "fatal": logging.CRITICAL}


def _value(text: str):
    """A --find value as the key column holds it: an int, else a float, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def find(opts: LoggerOptions) -> int:
    """Print where the records whose key is ``opts.find`` are; EXIT_FAILED when there are none."""
    outdir = Path(opts.outdir)
    if not (outdir / DB_NAME).exists():
        print(f"ddslogger: no event directory in {outdir} (no {DB_NAME}): is it a ddslogger output directory?",
              file=sys.stderr)
        return EXIT_FAILED
    store = Store(outdir, readonly=True)
    try:
        rows = store.find(_value(str(opts.find)))
        if not rows:
            saved = store.get("subscription", {})
            key = saved.get("sync") or saved.get("key")
            why = f"keyed on {key!r}" if key else "not keyed (the logger ran without --sync or --key)"
            print(f"ddslogger: no record with key {opts.find} in the event directory of {outdir} ({why})",
                  file=sys.stderr)
            return EXIT_FAILED
        for stream, output, out_entry, source, source_entry in rows:
            status = store.output_status(output)
            note = ""
            if status and status[0] == "open":
                note = " (still being written)"
            elif status and status[2]:
                note = " (archived; the local copy is deleted)"
            print(f"{opts.find} {stream}: {output} entry {out_entry}{note} (source {source} entry {source_entry})")
        return EXIT_OK
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    """The ``ddslogger`` console script."""
    opts = parse(argv)
    if opts.find is not None:
        return find(opts)
    level = _LEVELS.get(opts.log_level.lower())
    if level is None:
        print(f"ddslogger: unknown log level {opts.log_level!r}; valid: Verbose, Debug, Info, Warning, Error, Fatal",
              file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=f"%(asctime)s ddslogger[{os.getpid()}] %(levelname)s: %(message)s")
    from .logger import DataLogger, LoggerError  # heavy imports (uproot, awkward) only when logging

    logger = DataLogger(opts)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: logger.stop())
    try:
        logger.run()
    except LoggerError as exc:
        logging.getLogger("ddslogger").error("%s", exc)
        return EXIT_FAILED
    logging.getLogger("ddslogger").info("stopped after writing %d records", logger.records_written)
    return EXIT_OK
