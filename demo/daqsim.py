"""A simulated MINOS-like DAQ: writes rotating ROOT files the way the real one did.

Files are ``F<run:08d>_<subrun:04d>.mdaq.root`` in the data directory, so name
order is time order. Subruns count from 0. A new subrun (file) starts every
``records_per_file`` snarls and/or every ``seconds_per_file`` seconds; with
``keep_files`` only the newest K DAQ files in the directory are kept.

Each file is written under a hidden temporary name (``.F..._0001.mdaq.root.tmp``)
and renamed to its final name with its first records, so a reader listing
``*.root`` never sees a file without its trees. A file is closed (complete)
before the next one appears.

Streams (TTrees) and branches::

    DaqSnarl    physics triggers, ~200 Hz (Poisson)
        run int32, subrun int32, snarl int64 (from 0, contiguous over the run),
        trigsrc int32 (see TRIGGER_SOURCES), time float64 (unix seconds),
        nhits int32, plane var*int16, strip var*int16, adc var*float32
        (len(plane) == len(strip) == len(adc) == nhits)
    DaqMonitor  DAQ rates, ~1 Hz (periodic)
        run int32, subrun int32, snarl int64 (latest snarl at `time`, -1 before
        the first), time float64, trigger_rate float32 (Hz since the previous
        record), ncrates int32 (always 16), crate_rate var*float32 (kHz singles)
    DcsMonitor  detector control, ~0.2 Hz (periodic)
        run int32, subrun int32, time float64, temp_rack float32 (degC),
        temp_hall float32 (degC), hv float32 (V, nominal 850 with slow drift)

Every step (``step_seconds``, default 0.05 s) appends, per stream, the records of
that step as one ``extend`` (one basket per branch); a stream with no records in
a step is not extended. ``step(now=None)`` advances a simulated clock without
sleeping (deterministic for a given ``seed`` and ``start_time``); ``run()`` is the
real-time loop. ``ddsdaqsim`` is the command line.

``writer="root"`` writes the same streams with ROOT itself (:mod:`demo.rootwriter`):
``TTree::Fill`` with ``AutoSave("SaveSelf")`` every ``autosave`` entries (or
``autosave_seconds``), ``std::vector``/``std::string`` branches and DcsMonitor as a
split object; or, with ``file_format="rntuple"``, an RNTuple per stream committed
when its file ends. Such a file appears under its final name with its first
AutoSave (or committed cluster). ``ddsdaqsim`` writes with ROOT when it is installed.
"""

from __future__ import annotations

import math
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import awkward as ak
import numpy as np
import uproot

from .rootwriter import FORMATS  # no ROOT import: that waits for the first ROOT writer

SNARL = "DaqSnarl"
DAQ_MONITOR = "DaqMonitor"
DCS_MONITOR = "DcsMonitor"
STREAMS = (SNARL, DAQ_MONITOR, DCS_MONITOR)

#: trigger source code -> name, as in the MINOS raw data headers (bit codes)
TRIGGER_SOURCES = {1: "plane", 2: "energy", 4: "spill", 8: "light-injection", 16: "null"}
_TRIGGER_CODES = np.array(list(TRIGGER_SOURCES), dtype=np.int32)
_TRIGGER_FRACTIONS = np.array([0.85, 0.07, 0.02, 0.05, 0.01])
# nhits = offset + Gamma(shape, scale), per trigger source (same order as the codes):
# through-going muons, showers, beam spills (broad), LI flashes (narrow), noise.
_NHITS_OFFSET = np.array([20.0, 30.0, 0.0, 0.0, 0.0])
_NHITS_SHAPE = np.array([2.0, 3.0, 1.2, 400.0, 1.5])
_NHITS_SCALE = np.array([25.0, 60.0, 120.0, 1.0, 2.0])
MAX_HITS = 900

N_PLANES = 486
N_STRIPS = 192
N_CRATES = 16
DEFAULT_RUN = 12345
HV_NOMINAL = 850.0

#: a step that comes later than this after the previous one simulates only the
#: last MAX_CATCH_UP seconds (the DAQ was dead meanwhile) instead of a burst
MAX_CATCH_UP = 1.0

FILE_NAME_RE = re.compile(r"^F(\d{8})_(\d{4})\.mdaq\.root$")

EXIT_OK = 0
EXIT_USAGE = 2

#: who writes the files: uproot's writer, or ROOT itself (demo.rootwriter)
WRITERS = ("uproot", "root")


def file_name(run: int, subrun: int) -> str:
    """The DAQ file name of a run and subrun: ``F00012345_0001.mdaq.root``."""
    return f"F{run:08d}_{subrun:04d}.mdaq.root"


def parse_file_name(name: str) -> tuple[int, int] | None:
    """``(run, subrun)`` of a DAQ file name, or None for any other name."""
    m = FILE_NAME_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _temp_name(name: str) -> str:
    return f".{name}.tmp"


def daq_files(data_dir: str) -> list[str]:
    """The DAQ file names in ``data_dir``, oldest first."""
    try:
        names = os.listdir(data_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if parse_file_name(n))


def next_free_run(data_dir: str, default: int = DEFAULT_RUN) -> int:
    """``default``, or one more than the highest run with files in ``data_dir``."""
    runs = [parse_file_name(n)[0] for n in daq_files(data_dir)]
    return max(default, max(runs) + 1) if runs else default


@dataclass(frozen=True)
class ClosedFile:
    """What one finished file holds."""

    name: str
    run: int
    subrun: int
    entries: dict  # stream -> entries written
    seconds: float  # simulated time the file covers
    size: int  # bytes on disk

    def summary(self) -> str:
        counts = " ".join(f"{s}={n}" for s, n in self.entries.items())
        return f"closed {self.name}: {counts} ({self.seconds:.1f} s, {self.size / 1e6:.2f} MB)"


@dataclass
class _OpenFile:
    name: str
    subrun: int
    start: float  # simulated time the file starts at
    file: object  # uproot WritableDirectory
    entries: dict = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    visible: bool = False  # renamed to its final name

    @property
    def empty(self) -> bool:
        return not any(self.entries.values())


def _tree_types():
    hits = ak.types.from_datashape("var * {plane: int16, strip: int16, adc: float32}", highlevel=False)
    return {
        SNARL: (
            {"run": np.int32, "subrun": np.int32, "snarl": np.int64, "trigsrc": np.int32,
             "time": np.float64, "hits": hits},
            "nhits",
        ),
        DAQ_MONITOR: (
            {"run": np.int32, "subrun": np.int32, "snarl": np.int64, "time": np.float64,
             "trigger_rate": np.float32, "crate_rate": "var * float32"},
            "ncrates",
        ),
        DCS_MONITOR: (
            {"run": np.int32, "subrun": np.int32, "time": np.float64,
             "temp_rack": np.float32, "temp_hall": np.float32, "hv": np.float32},
            None,
        ),
    }


def _reflect(x: np.ndarray, n: int) -> np.ndarray:
    """Fold values into [0, n) by reflecting at the edges (a track leaving the detector)."""
    period = 2 * n
    x = np.mod(x, period)
    return np.where(x >= n, period - 1 - x, x)


class DaqSimulator:
    """Writes DaqSnarl, DaqMonitor and DcsMonitor records into rotating DAQ files.

    Args:
        data_dir (str): directory the files go to; created if missing.
        run (int): run number; refused if ``data_dir`` already has files of it. Default 12345.
        snarl_rate (float): mean DaqSnarl rate in Hz (Poisson); default 200.
        monitor_rate (float): DaqMonitor records per second; 0 disables; default 1.
        dcs_rate (float): DcsMonitor records per second; 0 disables; default 0.2.
        step_seconds (float): seconds per step (one extend per stream); default 0.05.
        records_per_file (int | None): snarls per file; None: no limit (default).
        seconds_per_file (float | None): simulated seconds per file; None: no limit. Default 30.
        keep_files (int | None): keep only the newest K DAQ files of the directory
            (any run; the open one counts); None keeps all (default).
        seed (int): seed of the random numbers; default 1.
        start_time (float | None): unix time the run starts at; default now.
        on_file_closed (callable | None): called with a ``ClosedFile`` per finished file.
        writer (str): ``"uproot"`` (default) or ``"root"`` (ROOT itself, see :mod:`demo.rootwriter`).
        file_format (str): ``"ttree"`` (default) or ``"rntuple"`` (ROOT writer only).
        autosave (int): ROOT writer: entries per ``AutoSave`` (or committed RNTuple cluster); default 100.
        autosave_seconds (float): ROOT writer: also save a stream with entries unsaved this long
            (simulated time); default 1.0.

    Attributes:
        written (dict): ``{file name: {stream: entries written}}`` of every file that
            appeared, including ones ``keep_files`` removed later.
        removed (list): names of the files removed by ``keep_files``.
    """

    def __init__(self, data_dir, *, run=DEFAULT_RUN, snarl_rate=200.0, monitor_rate=1.0,
                 dcs_rate=0.2, step_seconds=0.05, records_per_file=None, seconds_per_file=30.0,
                 keep_files=None, seed=1, start_time=None,
                 on_file_closed: Callable[[ClosedFile], None] | None = None,
                 writer="uproot", file_format="ttree", autosave=100, autosave_seconds=1.0):
        if writer not in WRITERS:
            raise ValueError(f"writer must be one of {', '.join(WRITERS)}, got {writer!r}")
        if file_format not in FORMATS:
            raise ValueError(f"file_format must be one of {', '.join(FORMATS)}, got {file_format!r}")
        if file_format != "ttree" and writer != "root":
            raise ValueError(f"file_format {file_format!r} needs writer='root'")
        if autosave < 1 or not autosave_seconds > 0:
            raise ValueError(f"autosave must be >= 1 entries and autosave_seconds > 0, got "
                             f"{autosave!r} and {autosave_seconds!r}")
        for name, value in (("snarl_rate", snarl_rate), ("monitor_rate", monitor_rate),
                            ("dcs_rate", dcs_rate)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 Hz, got {value!r}")
        if not step_seconds > 0:
            raise ValueError(f"step_seconds must be > 0, got {step_seconds!r}")
        if records_per_file is not None and records_per_file < 1:
            raise ValueError(f"records_per_file must be >= 1 or None, got {records_per_file!r}")
        if seconds_per_file is not None and not seconds_per_file > 0:
            raise ValueError(f"seconds_per_file must be > 0 or None, got {seconds_per_file!r}")
        if keep_files is not None and keep_files < 1:
            raise ValueError(f"keep_files must be >= 1 or None, got {keep_files!r}")
        if not 0 <= run < 10**8:
            raise ValueError(f"run must fit 8 digits, got {run!r}")

        self.data_dir = os.path.abspath(data_dir)
        os.makedirs(self.data_dir, exist_ok=True)
        existing = [n for n in daq_files(self.data_dir) if parse_file_name(n)[0] == run]
        if existing:
            raise FileExistsError(
                f"run {run} already has files in {self.data_dir} ({existing[0]} ...); "
                f"choose another run (next free: {next_free_run(self.data_dir)})"
            )
        self.run_number = run
        self.snarl_rate = float(snarl_rate)
        self.monitor_rate = float(monitor_rate)
        self.dcs_rate = float(dcs_rate)
        self.step_seconds = float(step_seconds)
        self.records_per_file = records_per_file
        self.seconds_per_file = seconds_per_file
        self.keep_files = keep_files
        self.on_file_closed = on_file_closed
        self.writer = writer
        self.file_format = file_format
        self.autosave = int(autosave)
        self.autosave_seconds = float(autosave_seconds)
        self.written: dict[str, dict[str, int]] = {}
        self.removed: list[str] = []

        self._rng = np.random.default_rng(seed)
        self._types = _tree_types()
        self._capacities = self._basket_capacities()
        self._clock = time.time() if start_time is None else float(start_time)
        self._next_snarl = 0
        self._next_subrun = 0
        self._last_snarl_time = -math.inf
        self._snarl_history = np.empty(0)  # snarl times since the previous DaqMonitor record
        self._next_monitor = self._clock + 1.0 / self.monitor_rate if self.monitor_rate else math.inf
        self._last_monitor = self._clock
        self._next_dcs = self._clock + 1.0 / self.dcs_rate if self.dcs_rate else math.inf
        self._crate_base = self._rng.uniform(8.0, 14.0, N_CRATES)
        self._temp_rack_walk = 0.0
        self._hv_walk = 0.0
        self._current: _OpenFile | None = None
        self._closed = False
        for name in os.listdir(self.data_dir):  # stale temp files of this run: ours, never seen
            if name.startswith(f".F{run:08d}_") and name.endswith(".mdaq.root.tmp"):
                os.unlink(os.path.join(self.data_dir, name))
        self._open(self._clock)

    # ---- public API -------------------------------------------------------------

    @property
    def current_file(self) -> str:
        """Name of the file being written (it appears with its first records)."""
        return self._current.name

    @property
    def saved_entries(self) -> dict[str, int]:
        """``{stream: entries}`` of the current file that are on disk: all of them with uproot's
        writer; with ROOT, those up to the stream's last AutoSave (or committed RNTuple cluster)."""
        if self.writer == "root":
            return self._current.file.saved()
        return dict(self._current.entries)

    def step(self, now: float | None = None) -> dict[str, int]:
        """Append the records of one step, rotating files as configured.

        Args:
            now (float | None): unix time the step ends at; None: the previous step's
                end plus ``step_seconds`` (simulated time, no sleeping).

        Returns:
            ``{stream: records appended}`` for this step.
        """
        self._check_open()
        if now is None:
            now = self._clock + self.step_seconds
        appended = dict.fromkeys(STREAMS, 0)
        if now <= self._clock:
            return appended
        begin = max(self._clock, now - MAX_CATCH_UP)
        batch = self._generate(begin, now)
        self._clock = now
        while True:
            ends_at, n_snarls = self._file_end(batch, now)
            part = {}
            for stream, cols in batch.items():
                n = n_snarls if stream == SNARL and n_snarls is not None else int(
                    np.searchsorted(cols["time"], ends_at, side="left"))
                part[stream] = {k: v[:n] for k, v in cols.items()}
                batch[stream] = {k: v[n:] for k, v in cols.items()}
            for stream, n in self._write(part).items():
                appended[stream] += n
            if ends_at == math.inf:
                break
            self._rotate(ends_at)
        return appended

    def rotate(self) -> str:
        """Close the current file and start the next subrun; returns the new file's name.

        The new file appears in the directory with its first records.
        """
        self._check_open()
        self._make_visible()  # asked for explicitly: even an empty file is a subrun
        self._close_current(self._clock)
        self._open(self._clock)
        return self._current.name

    def close(self) -> None:
        """Close the current file. A file that never got a record is discarded."""
        if self._closed:
            return
        self._closed = True
        if self._current is not None:
            self._close_current(self._clock)
            self._current = None

    def __enter__(self) -> DaqSimulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- real-time loop ----------------------------------------------------------

    def run(self, seconds: float | None = None, stop_event=None) -> None:
        """Step in real time for ``seconds`` (None: until ``stop_event`` is set).

        Args:
            seconds (float | None): how long; None runs until stopped.
            stop_event: anything with ``is_set()`` (and ideally ``wait(timeout)``),
                e.g. a ``threading.Event``; checked every step.
        """
        self._check_open()
        start = time.monotonic()
        deadline = math.inf if seconds is None else start + seconds
        tick = start
        while not (stop_event is not None and stop_event.is_set()):
            self.step(time.time())
            tick += self.step_seconds
            now = time.monotonic()
            if now >= deadline:
                break
            if tick < now:  # late (slow disk, suspended): don't burst to catch up
                tick = now
            delay = min(tick, deadline) - now
            if stop_event is not None and hasattr(stop_event, "wait"):
                stop_event.wait(delay)
            else:
                time.sleep(delay)

    # ---- files -------------------------------------------------------------------

    def _basket_capacities(self) -> dict[str, int]:
        # uproot's writer keeps a per-branch table of baskets (20 bytes per slot, the
        # whole capacity on disk) and grows it x10 when full, leaving the old one as
        # dead space. Size it for the extends one file is expected to get.
        file_seconds = math.inf
        if self.seconds_per_file is not None:
            file_seconds = self.seconds_per_file
        if self.records_per_file is not None and self.snarl_rate > 0:
            file_seconds = min(file_seconds, self.records_per_file / self.snarl_rate)
        steps = file_seconds / self.step_seconds
        rates = {SNARL: self.snarl_rate, DAQ_MONITOR: self.monitor_rate, DCS_MONITOR: self.dcs_rate}
        capacities = {}
        for stream, rate in rates.items():
            extends = min(steps, rate * file_seconds) if rate > 0 else 0.0
            capacities[stream] = 10 if extends == math.inf else int(min(max(10, 1.25 * extends + 10), 100_000))
        return capacities

    def _open(self, start: float) -> None:
        subrun = self._next_subrun
        self._next_subrun += 1
        name = file_name(self.run_number, subrun)
        temp = os.path.join(self.data_dir, _temp_name(name))
        if self.writer == "root":
            from .rootwriter import RootFile

            root_file = RootFile(temp, format=self.file_format, autosave=self.autosave,
                                 autosave_seconds=self.autosave_seconds, streams=STREAMS)
            self._current = _OpenFile(name=name, subrun=subrun, start=start, file=root_file)
            return
        f = uproot.recreate(temp)
        for stream, (types, counter) in self._types.items():
            f.mktree(stream, types, counter_name=lambda _c, counter=counter: counter,
                     field_name=lambda _outer, inner: inner,
                     initial_basket_capacity=self._capacities[stream])
        self._current = _OpenFile(name=name, subrun=subrun, start=start, file=f)

    def _make_visible(self) -> None:
        cur = self._current
        if cur.visible:
            return
        os.replace(os.path.join(self.data_dir, _temp_name(cur.name)),
                   os.path.join(self.data_dir, cur.name))
        cur.visible = True
        self.written[cur.name] = cur.entries
        self._clean_up()

    def _close_current(self, end: float) -> None:
        cur = self._current
        cur.file.close()
        if not cur.visible and not cur.empty:  # ROOT writer: records never AutoSaved until now
            self._make_visible()
        if not cur.visible:  # never got a record, nobody saw it
            os.unlink(os.path.join(self.data_dir, _temp_name(cur.name)))
            return
        if self.on_file_closed is not None:
            path = os.path.join(self.data_dir, cur.name)
            size = os.path.getsize(path) if os.path.exists(path) else 0
            self.on_file_closed(ClosedFile(
                name=cur.name, run=self.run_number, subrun=cur.subrun, entries=dict(cur.entries),
                seconds=end - cur.start, size=size))

    def _rotate(self, start: float) -> None:
        """Automatic rotation at simulated time ``start``; an empty file just restarts."""
        if self._current.empty:
            self._current.start = start
            return
        self._close_current(start)
        self._open(start)

    def _clean_up(self) -> None:
        if self.keep_files is None:
            return
        names = daq_files(self.data_dir)
        for name in names[: max(0, len(names) - self.keep_files)]:
            try:
                os.unlink(os.path.join(self.data_dir, name))
            except FileNotFoundError:
                continue
            self.removed.append(name)

    def _file_end(self, batch, now: float) -> tuple[float, int | None]:
        """When the current file ends within this step (inf: not in this step), and
        how many of the batch's snarls go into it when the count limit decides."""
        cur = self._current
        ends_at = math.inf
        if self.seconds_per_file is not None and cur.start + self.seconds_per_file <= now:
            ends_at = cur.start + self.seconds_per_file
        n_snarls = None
        if self.records_per_file is not None:
            times = batch[SNARL]["time"]
            room = self.records_per_file - cur.entries[SNARL]
            n_in_time = int(np.searchsorted(times, ends_at, side="left"))
            if n_in_time >= room:  # the count limit comes first
                n_snarls = room
                ends_at = min(ends_at, float(times[room]) if room < len(times) else now)
        return ends_at, n_snarls

    def _write(self, part) -> dict[str, int]:
        cur = self._current
        counts = {}
        for stream, cols in part.items():
            n = len(cols["time"])
            counts[stream] = n
            if n == 0:  # an extend with no rows would still add an empty basket
                continue
            data = {"run": np.full(n, self.run_number, np.int32),
                    "subrun": np.full(n, cur.subrun, np.int32)}
            data.update(cols)
            if self.writer == "root":
                cur.file.extend(stream, data, self._clock)
            else:
                cur.file[stream].extend(data)
            cur.entries[stream] += n
            if self.writer != "root":
                self._make_visible()
        if self.writer == "root":
            cur.file.tick(self._clock)
            if cur.file.started:  # the file appears with its first AutoSaved records
                self._make_visible()
        return counts

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"DaqSimulator for {self.data_dir} is closed")

    # ---- physics -----------------------------------------------------------------

    def _generate(self, begin: float, end: float) -> dict[str, dict]:
        """The records of every stream with time in (begin, end], as sorted columns."""
        snarls = self._snarls(begin, end)
        return {
            SNARL: snarls,
            DAQ_MONITOR: self._daq_monitor(begin, end, snarls["time"]),
            DCS_MONITOR: self._dcs_monitor(begin, end),
        }

    def _snarls(self, begin: float, end: float) -> dict:
        rng = self._rng
        n = int(rng.poisson(self.snarl_rate * (end - begin)))
        times = np.sort(rng.uniform(begin, end, n))
        src = rng.choice(len(_TRIGGER_CODES), size=n, p=_TRIGGER_FRACTIONS)
        nhits = _NHITS_OFFSET[src] + rng.gamma(_NHITS_SHAPE[src], _NHITS_SCALE[src])
        nhits = np.minimum(nhits, MAX_HITS).astype(np.int32)
        total = int(nhits.sum())

        # a straight track (two hits per plane) from a random vertex, plus 10% noise hits
        owner = np.repeat(np.arange(n), nhits)
        starts = np.cumsum(nhits) - nhits
        k = np.arange(total) - np.repeat(starts, nhits)
        plane0 = rng.integers(0, N_PLANES, n)
        direction = rng.choice(np.array([-1, 1]), n)
        strip0 = rng.normal(N_STRIPS / 2, N_STRIPS / 5, n)
        slope = rng.normal(0.0, 0.6, n)
        layer = k // 2
        plane = plane0[owner] + direction[owner] * layer
        strip = np.rint(strip0[owner] + slope[owner] * layer + rng.normal(0.0, 0.8, total))
        # Landau-like pulse heights (Moyal: -ln(Z^2) has its mode at 0 and a long tail)
        z = rng.standard_normal(total)
        adc = 300.0 + 45.0 * -np.log(np.maximum(z * z, 1e-12))
        noise = rng.random(total) < 0.1
        n_noise = int(noise.sum())
        plane[noise] = rng.integers(0, N_PLANES, n_noise)
        strip[noise] = rng.integers(0, N_STRIPS, n_noise)
        adc[noise] = 5.0 + rng.exponential(40.0, n_noise)
        adc = np.clip(adc, 0.0, 16383.0)

        hits = ak.zip({
            "plane": _reflect(plane, N_PLANES).astype(np.int16),
            "strip": _reflect(strip.astype(np.int64), N_STRIPS).astype(np.int16),
            "adc": adc.astype(np.float32),
        })
        first = self._next_snarl
        self._next_snarl += n
        if n:
            self._last_snarl_time = times[-1]
        return {
            "snarl": np.arange(first, first + n, dtype=np.int64),
            "trigsrc": _TRIGGER_CODES[src],
            "time": times,
            "hits": ak.unflatten(hits, nhits),
        }

    def _periodic(self, attr: str, rate: float, begin: float, end: float) -> np.ndarray:
        """Times of a periodic stream in (begin, end]; skips what a dead time missed."""
        if rate <= 0:
            return np.empty(0)
        period = 1.0 / rate
        nxt = getattr(self, attr)
        if nxt <= begin:
            nxt += period * (math.floor((begin - nxt) / period) + 1)
        times = []
        while nxt <= end:
            times.append(nxt)
            nxt += period
        setattr(self, attr, nxt)
        return np.array(times, dtype=np.float64)

    def _daq_monitor(self, begin: float, end: float, snarl_times: np.ndarray) -> dict:
        times = self._periodic("_next_monitor", self.monitor_rate, begin, end)
        n = len(times)
        first_snarl = self._next_snarl - len(snarl_times)  # number of this batch's first snarl
        history = np.concatenate([self._snarl_history, snarl_times])
        rates = np.empty(n, np.float32)
        latest = np.empty(n, np.int64)
        prev = self._last_monitor
        for i, t in enumerate(times):
            upto = int(np.searchsorted(snarl_times, t, side="right"))
            latest[i] = first_snarl + upto - 1
            rates[i] = np.count_nonzero((history > prev) & (history <= t)) / (t - prev)
            prev = t
        if n:
            self._last_monitor = prev
            history = history[history > prev]
        self._snarl_history = history
        # singles rates per crate: a stable base, a common slow drift, noise, a rare hot crate
        drift = 1.0 + 0.05 * np.sin(2 * np.pi * times / 3600.0)
        crate = self._crate_base[None, :] * drift[:, None] * (
            1.0 + 0.03 * self._rng.standard_normal((n, N_CRATES)))
        crate *= np.where(self._rng.random((n, N_CRATES)) < 0.01, 3.0, 1.0)
        return {
            "snarl": latest,
            "time": times,
            "trigger_rate": rates,
            "crate_rate": ak.from_regular(ak.Array(crate.astype(np.float32))),
        }

    def _dcs_monitor(self, begin: float, end: float) -> dict:
        times = self._periodic("_next_dcs", self.dcs_rate, begin, end)
        n = len(times)
        rng = self._rng
        rack = np.empty(n, np.float32)
        hv = np.empty(n, np.float32)
        for i in range(n):  # mean-reverting random walks: slow drifts around nominal
            self._temp_rack_walk = 0.98 * self._temp_rack_walk + rng.normal(0.0, 0.05)
            self._hv_walk = 0.995 * self._hv_walk + rng.normal(0.0, 0.2)
            rack[i] = self._temp_rack_walk
            hv[i] = self._hv_walk
        day = 2 * np.pi * times / 86400.0
        return {
            "time": times,
            "temp_rack": (27.0 + 1.5 * np.sin(day) + rack + rng.normal(0, 0.03, n)).astype(np.float32),
            "temp_hall": (11.5 + 0.3 * np.sin(day + 1.0) + rng.normal(0, 0.02, n)).astype(np.float32),
            "hv": (HV_NOMINAL + hv + rng.normal(0, 0.1, n)).astype(np.float32),
        }


# ---- command line --------------------------------------------------------------


class _StopFlag:
    """Set by a signal handler (which must do nothing but record), polled by ``run``."""

    def __init__(self):
        self.signum = None

    def set(self, signum=None, _frame=None):
        self.signum = signum

    def is_set(self) -> bool:
        return self.signum is not None

    def wait(self, timeout: float) -> bool:
        # a signal interrupts the sleep only to run the handler; steps are short anyway
        if not self.is_set() and timeout > 0:
            time.sleep(timeout)
        return self.is_set()


def _choose_writer(writer: str, file_format: str) -> tuple[str, str]:
    """(writer, how the start line names it) for ``--writer``; a usage error when ROOT is asked for and missing."""
    import click

    from .rootwriter import INSTALL_HINT, root_available, root_version

    if writer == "auto":
        writer = "root" if root_available() else "uproot"
        if writer == "uproot" and file_format != "ttree":
            raise click.UsageError(f"--format {file_format} is written by ROOT; {INSTALL_HINT}")
    if writer == "root":
        try:
            return writer, f"ROOT {root_version()}"
        except ImportError:
            raise click.UsageError(f"--writer root: {INSTALL_HINT}") from None
    return writer, f"uproot {uproot.__version__}"


def _main_impl(data_dir, seconds, run, snarl_rate, monitor_rate, dcs_rate, records_per_file,
               seconds_per_file, keep, step, seed, writer, file_format, autosave, autosave_seconds):
    import click

    def echo(line):
        click.echo(f"ddsdaqsim: {line}", err=True)

    writer, writer_name = _choose_writer(writer, file_format)

    if run is None:
        run = next_free_run(data_dir) if os.path.isdir(data_dir) else DEFAULT_RUN
    stop = _StopFlag()
    previous = {sig: signal.signal(sig, stop.set) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sim = DaqSimulator(
            data_dir, run=run, snarl_rate=snarl_rate, monitor_rate=monitor_rate, dcs_rate=dcs_rate,
            step_seconds=step, records_per_file=records_per_file,
            seconds_per_file=seconds_per_file or None, keep_files=keep, seed=seed,
            on_file_closed=lambda closed: echo(closed.summary()), writer=writer, file_format=file_format,
            autosave=autosave, autosave_seconds=autosave_seconds)
    except (ValueError, FileExistsError) as exc:
        raise click.UsageError(str(exc)) from None
    try:
        rotation = []
        if records_per_file:
            rotation.append(f"{records_per_file} snarls")
        if seconds_per_file:
            rotation.append(f"{seconds_per_file:g} s")
        how = f"{writer_name}, {'RNTuple' if file_format == 'rntuple' else 'TTree'}"
        if writer == "root":
            saving = "cluster committed" if file_format == "rntuple" else "AutoSave"
            how += f", {saving} every {autosave} entries or {autosave_seconds:g} s"
        echo(f"writer: {how}")
        echo(f"run {run} writing to {sim.data_dir} (snarls {snarl_rate:g} Hz, new file every "
             f"{' or '.join(rotation) or 'never'}"
             f"{'' if keep is None else f', keeping {keep} files'})")
        with sim:
            sim.run(seconds, stop_event=stop)
        if stop.is_set():
            echo(f"stopped by {signal.Signals(stop.signum).name}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


def _build_cli():
    import click

    @click.command(context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("-d", "--data-dir", envvar="DDS_DAQ_DATA_DIR", required=True,
                  type=click.Path(file_okay=False),
                  help="Directory to write to (default: $DDS_DAQ_DATA_DIR); created if missing.")
    @click.option("--seconds", type=click.FloatRange(min=0), default=None,
                  help="Run this long (default: until Ctrl-C or SIGTERM).")
    @click.option("--run", "run", type=click.IntRange(0, 99_999_999), default=None,
                  help=f"Run number (default: {DEFAULT_RUN}, or one past the highest in DIR).")
    @click.option("--snarl-rate", type=click.FloatRange(min=0), default=200.0, show_default=True,
                  help="Mean DaqSnarl rate, Hz.")
    @click.option("--monitor-rate", type=click.FloatRange(min=0), default=1.0, show_default=True,
                  help="DaqMonitor records per second (0: none).")
    @click.option("--dcs-rate", type=click.FloatRange(min=0), default=0.2, show_default=True,
                  help="DcsMonitor records per second (0: none).")
    @click.option("--records-per-file", type=click.IntRange(min=1), default=None,
                  help="New file every N snarls (default: no limit).")
    @click.option("--seconds-per-file", type=click.FloatRange(min=0), default=30.0,
                  show_default=True, help="New file every S seconds (0: no limit).")
    @click.option("--keep", type=click.IntRange(min=1), default=None,
                  help="Keep only the newest N DAQ files in DIR (default: all).")
    @click.option("--step", type=click.FloatRange(min=0.001), default=0.05, show_default=True,
                  help="Seconds between appends.")
    @click.option("--seed", type=int, default=1, show_default=True, help="Random seed.")
    @click.option("--writer", type=click.Choice(("auto",) + WRITERS), default="auto", show_default=True,
                  help="Who writes the files: ROOT itself (TTree::Fill and AutoSave), uproot's writer, "
                       "or auto: ROOT when it is installed, else uproot.")
    @click.option("--format", "file_format", type=click.Choice(FORMATS), default="ttree", show_default=True,
                  help="TTrees, or (ROOT) an RNTuple per stream, committed when its file ends.")
    @click.option("--autosave", type=click.IntRange(min=1), default=100, show_default=True,
                  help="ROOT: AutoSave a tree (commit an RNTuple cluster) every N entries.")
    @click.option("--autosave-seconds", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
                  help="ROOT: also save a stream whose entries have waited this long.")
    def main(**kwargs):
        """Simulated MINOS-like DAQ writing F<run>_<subrun>.mdaq.root files into DIR."""
        return _main_impl(**kwargs)

    return main


def main(argv=None):
    """Console script ``ddsdaqsim``."""
    return _build_cli().main(args=argv, prog_name="ddsdaqsim")


if __name__ == "__main__":
    main()
