"""Output file names: a pattern with the sequence number and the run and subrun of the first record.

The default ``L{seq:06d}_{run:08d}_{subrun:04d}.root`` sorts in the order the files
were written (the sequence comes first), so a ddsparentserver pointed at the
output directory serves it like a DAQ directory. A file being written carries a
temporary name, ``.NAME.part``: not ``*.root``, so nothing takes it for a finished file.
"""

from __future__ import annotations

import re

DEFAULT_PATTERN = "L{seq:06d}_{run:08d}_{subrun:04d}.root"
PART_SUFFIX = ".part"

#: run and subrun in a DAQ file name like F00012345_0001.mdaq.root
_RUN_SUBRUN = re.compile(r"(\d+)_(\d+)")


def check_pattern(pattern: str) -> str:
    """``pattern`` if it makes ``.root`` names with the sequence number; ValueError saying what is wrong otherwise."""
    try:
        name = pattern.format(seq=1, run=2, subrun=3)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"--name-pattern {pattern!r} is not a format with {{seq}}, {{run}}, {{subrun}}: "
                         f"{exc}") from None
    if "{seq" not in pattern or not name.endswith(".root") or "/" in name or name.startswith("."):
        raise ValueError(f"--name-pattern {pattern!r} must hold {{seq}}, end in .root and name no directory; "
                         f"e.g. {DEFAULT_PATTERN!r}")
    return pattern


def run_subrun(source_file: str) -> tuple[int, int]:
    """Run and subrun from a DAQ file name (``F00012345_0001.mdaq.root`` -> 12345, 1); (0, 0) if it has none."""
    m = _RUN_SUBRUN.search(source_file)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def output_name(pattern: str, seq: int, source_file: str) -> str:
    run, subrun = run_subrun(source_file)
    return pattern.format(seq=seq, run=run, subrun=subrun)


def part_name(name: str) -> str:
    """The temporary name of output ``name`` while it is written."""
    return f".{name}{PART_SUFFIX}"
