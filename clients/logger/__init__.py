"""``ddslogger``: keep a filtered copy of the live data in rotated ROOT files, exactly once across restarts.

- ``options``: the command line, parsed into :class:`LoggerOptions`.
- ``logger``: :class:`DataLogger`, the loop: receive, write, checkpoint, rotate, reconnect.
- ``position``: :class:`Position`, the last source record logged per stream (what a restart resumes from).
- ``columns``: records of a stream as branches uproot's TTree writer takes; what it cannot write, and why.
- ``writer``: :class:`OutputFile`, one output under a temporary name until closed; salvage after a kill.
- ``naming``: output file names (sequence, run, subrun) and the temporary ``.part`` names.
- ``store``: the journal (``ddslogger.db``): position, outputs, event directory, archive state.
- ``archiver``: copies closed files to an archive, verified by SHA-256, with retries; deletes after.
- ``diskguard``: pauses writing while the output disk is fuller than a threshold.
- ``cli``: the ``ddslogger`` console script, and ``--find`` over the event directory.
"""

from .cli import main
from .options import LoggerOptions

__all__ = ["LoggerOptions", "main"]
