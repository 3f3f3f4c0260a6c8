"""The ``ddslogger`` command line, parsed into :class:`LoggerOptions`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from .naming import DEFAULT_PATTERN, check_pattern


@dataclass
class LoggerOptions:
    """What one ``ddslogger`` does.

    Args:
        outdir (str): the output directory (``-o``).
        streams (list): streams to log (``--stream``, repeatable).
        host (str), port (int): the ddsparentserver; default localhost:9090.
        selection (str | dict | None): a cut in the selection language, run on the server: one for every
            stream, or ``{stream: cut}``.
        sync (str | None): build record sets on this branch; it is also the event directory's key.
        key (str | None): without ``sync``, the branch the event directory is keyed on.
        branches (dict | None): ``{stream: [names]}`` to log only these.
        prescale (int): log the 1st, (n+1)th, ... passing record per stream (counted by the logger).
        start (str): where a new output directory starts: ``oldest`` (default), ``current``, ``latest`` or a file.
        max_file_mb (float): rotate when the open file reaches this size; default 200.
        max_file_seconds (float | None): rotate when the open file is this old.
        name_pattern (str): the output file names.
        archive (str | None), delete_after_archive (bool), archive_max_backoff (float): the archiver.
        max_disk_percent (float | None): pause while the output disk is this full.
        batch_records (int): most records asked for at once; checkpoint_seconds (float): the longest
            time between durable checkpoints.
        find (str | None): query the event directory for this value and exit.
        log_level (str): logging level.
    """

    outdir: str
    streams: list[str] = field(default_factory=list)
    host: str = "localhost"
    port: int = 9090
    selection: str | dict[str, str] | None = None
    sync: str | None = None
    max_sync_delay: float = 2.0
    key: str | None = None
    branches: dict[str, list[str]] | None = None
    prescale: int = 1
    start: str = "oldest"
    max_file_mb: float = 200.0
    max_file_seconds: float | None = None
    name_pattern: str = DEFAULT_PATTERN
    archive: str | None = None
    delete_after_archive: bool = False
    archive_max_backoff: float = 60.0
    max_disk_percent: float | None = None
    batch_records: int = 5000
    checkpoint_seconds: float = 1.0
    find: str | None = None
    log_level: str = "Info"

    @property
    def index_key(self) -> str | None:
        """The branch the event directory is keyed on."""
        return self.sync or self.key

    def subscription_text(self) -> dict:
        """What the output directory's content depends on (a restart must not change it)."""
        return {"streams": list(self.streams), "selection": self.selection, "sync": self.sync, "key": self.key,
                "branches": self.branches, "prescale": self.prescale}


def _branches(values: list[str]) -> dict[str, list[str]] | None:
    out: dict[str, list[str]] = {}
    for v in values:
        stream, sep, names = v.rpartition(":")
        if not sep or not stream or not names:
            raise argparse.ArgumentTypeError(f"--branches {v!r}: give STREAM:b1,b2 (e.g. DaqSnarl:snarl,nhits)")
        out.setdefault(stream, []).extend(n for n in names.split(",") if n)
    return out or None


def _selection(values: list[str], streams: list[str]) -> str | dict[str, str] | None:
    """One cut for every stream, or ``{stream: cut}`` from ``STREAM:EXPR`` values."""
    per_stream: dict[str, str] = {}
    common = []
    for v in values:
        stream, sep, expr = v.partition(":")
        if sep and stream.strip() in streams:
            per_stream[stream.strip()] = expr
        else:
            common.append(v)
    if common and (per_stream or len(common) > 1):
        raise argparse.ArgumentTypeError(f"--selection: give one cut for every stream, or STREAM:EXPR for each of "
                                         f"{', '.join(streams)}; not both ({values})")
    return common[0] if common else (per_stream or None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ddslogger",
        description="Log the records a ddsparentserver serves into rotated ROOT files, exactly once across "
                    "restarts, with an event directory and optional archiving.")
    p.add_argument("-H", "--host", default="localhost", help="ddsparentserver host (default localhost)")
    p.add_argument("-p", "--port", type=int, default=9090, help="ddsparentserver port (default 9090)")
    p.add_argument("--stream", action="append", default=[], metavar="S", help="a stream to log; repeatable")
    p.add_argument("--selection", action="append", default=[], metavar="[STREAM:]EXPR",
                   help="a cut, run on the server: for every stream, or (repeatable) STREAM:EXPR for one")
    p.add_argument("--sync", metavar="BRANCH", help="build record sets on this branch; the event directory key")
    p.add_argument("--max-sync-delay", type=float, default=2.0, metavar="S",
                   help="seconds to wait for a stream missing from a synced set (default 2)")
    p.add_argument("--key", metavar="BRANCH", help="without --sync: the branch the event directory is keyed on")
    p.add_argument("--branches", action="append", default=[], metavar="STREAM:B1,B2",
                   help="log only these branches of STREAM; repeatable")
    p.add_argument("--prescale", type=int, default=1, metavar="N", help="log every N-th passing record per stream")
    p.add_argument("--start", default="oldest",
                   help="where a new output directory starts: oldest (default), current, latest or a file name")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR", help="the output directory")
    p.add_argument("--max-file-mb", type=float, default=200.0, metavar="MB", help="rotate at this size (default 200)")
    p.add_argument("--max-file-seconds", type=float, metavar="N", help="rotate a file this many seconds old")
    p.add_argument("--name-pattern", default=DEFAULT_PATTERN,
                   help=f"output file names, with {{seq}}, {{run}}, {{subrun}} (default {DEFAULT_PATTERN})")
    p.add_argument("--archive", metavar="DIR", help="copy each closed file here, verified by SHA-256")
    p.add_argument("--delete-after-archive", action="store_true", help="delete a local file once its copy is verified")
    p.add_argument("--archive-max-backoff", type=float, default=60.0, metavar="S",
                   help="longest wait between archive retries (default 60)")
    p.add_argument("--max-disk-percent", type=float, metavar="P", help="pause writing while the disk is P%% full")
    p.add_argument("--batch-records", type=int, default=5000, metavar="N", help="most records asked for at once")
    p.add_argument("--checkpoint-seconds", type=float, default=1.0, metavar="S",
                   help="longest time between durable checkpoints (default 1)")
    p.add_argument("--find", metavar="VALUE", help="print where the record with this key value is, and exit")
    p.add_argument("-l", "--log-level", default="Info", help="Verbose, Debug, Info, Warning, Error (default Info)")
    return p


def parse(argv: list[str] | None = None) -> LoggerOptions:
    """Parse a command line; a usage error exits with status 2 and says what was wrong."""
    p = parser()
    a = p.parse_args(argv)
    try:
        branches = _branches(a.branches)
        selection = _selection(a.selection, a.stream)
        check_pattern(a.name_pattern)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        p.error(str(exc))
    if a.find is None:
        if not a.stream:
            p.error("give at least one --stream to log (or --find VALUE to query the event directory)")
        if a.prescale < 1 or a.batch_records < 1 or a.max_file_mb <= 0 or a.checkpoint_seconds <= 0:
            p.error("--prescale and --batch-records must be at least 1; --max-file-mb and --checkpoint-seconds "
                    "must be positive")
        if a.max_disk_percent is not None and not 0 < a.max_disk_percent <= 100:
            p.error(f"--max-disk-percent must be in (0, 100], not {a.max_disk_percent}")
        if a.delete_after_archive and not a.archive:
            p.error("--delete-after-archive needs --archive DIR")
    return LoggerOptions(
        outdir=a.output_dir, streams=a.stream, host=a.host, port=a.port, selection=selection, sync=a.sync,
        max_sync_delay=a.max_sync_delay, key=a.key, branches=branches, prescale=a.prescale, start=a.start,
        max_file_mb=a.max_file_mb, max_file_seconds=a.max_file_seconds, name_pattern=a.name_pattern,
        archive=a.archive, delete_after_archive=a.delete_after_archive, archive_max_backoff=a.archive_max_backoff,
        max_disk_percent=a.max_disk_percent, batch_records=a.batch_records, checkpoint_seconds=a.checkpoint_seconds,
        find=a.find, log_level=a.log_level)
