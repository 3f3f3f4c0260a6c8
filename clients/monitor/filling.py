"""Fill one histogram or time graph of the config from record batches, with scikit-hep ``hist``.

- ``hist1d`` / ``hist2d``: a ``hist.Hist`` with regular axes and double storage; a
  list quantity fills one entry per element (x and y are broadcast against each
  other for 2-D).
- ``rate``: records per time bin over the last ``span`` seconds of the stream's
  own time branch (the page divides by the bin width); ``mean``: a mean-storage
  histogram of ``y`` per time bin. The time axis follows the newest record: it
  moves by whole bins, keeping what is still in the span.
- Reset: ``"never"``; ``"file"`` (at the first record of a new data file); or a
  sliding window of N seconds of arrival time, kept as ten slices, the oldest
  dropped as the window moves on.

:meth:`HistogramFiller.to_uhi` gives the uhi JSON (``uhi.io.json``) with
``metadata`` for the page: kind, title, labels, entries.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

import awkward as ak
import hist
import numpy as np

from .config import HistogramSpec

__all__ = ["HistogramFiller", "entries_of"]

#: a sliding window is kept as this many slices of arrival time
WINDOW_SLICES = 10


def entries_of(h: hist.Hist) -> int:
    """How many values were filled into ``h`` (flow bins included).

    Args:
        h (hist.Hist): a histogram with double, weight or mean storage.
    """
    total = h.sum(flow=True)
    for attribute in ("count", "value"):
        if hasattr(total, attribute):
            return int(round(float(getattr(total, attribute))))
    return int(round(float(total)))


def _flat(values: ak.Array) -> np.ndarray:
    return np.asarray(ak.to_numpy(ak.flatten(values, axis=None)), dtype=np.float64)


class HistogramFiller:
    """The live state of one configured histogram; thread-safe.

    Args:
        spec (HistogramSpec): what to fill.
        clock (Callable[[], float]): seconds, for sliding windows; default ``time.monotonic``.
    """

    def __init__(self, spec: HistogramSpec, clock: Callable[[], float] = time.monotonic):
        self.spec = spec
        self.clock = clock
        self.file: str | None = None
        self._lock = threading.Lock()
        self._slices: deque[tuple[float, hist.Hist]] = deque()
        self._hist: hist.Hist | None = None if spec.kind in ("rate", "mean") else self._new()

    # ---- building --------------------------------------------------------------

    def _new(self, start: float = 0.0) -> hist.Hist:
        spec = self.spec
        xtext = spec.x.text if spec.x else "x"
        ytext = spec.y.text if spec.y else "y"
        if spec.kind == "hist1d":
            (lo, hi), = spec.ranges
            return hist.Hist.new.Reg(spec.bins[0], lo, hi, name="x", label=spec.xlabel or xtext).Double()
        if spec.kind == "hist2d":
            (xlo, xhi), (ylo, yhi) = spec.ranges
            return (hist.Hist.new.Reg(spec.bins[0], xlo, xhi, name="x", label=spec.xlabel or xtext)
                    .Reg(spec.bins[1], ylo, yhi, name="y", label=spec.ylabel or ytext).Double())
        axis = hist.axis.Regular(spec.bins[0], start, start + spec.span, name="time", label=spec.xlabel or "time")
        if spec.kind == "rate":
            return hist.Hist(axis, storage=hist.storage.Double())
        return hist.Hist(axis, storage=hist.storage.Mean())

    # ---- filling -----------------------------------------------------------------

    def fill(self, arrays: ak.Array, file: str) -> int:
        """Fill the records of one batch.

        Args:
            arrays (awkward.Array): records of ``spec.stream`` (already passing the cut).
            file (str): the data file they come from (for ``reset = "file"``).

        Returns:
            int: the number of values filled.

        Raises:
            clients.monitor.quantity.QuantityError: a quantity cannot be computed from these records.
        """
        spec = self.spec
        stream = spec.stream
        if spec.kind == "hist1d":
            columns = [_flat(spec.x.values(arrays, stream))]  # type: ignore[union-attr]
        elif spec.kind == "hist2d":
            x, y = ak.broadcast_arrays(spec.x.values(arrays, stream), spec.y.values(arrays, stream))  # type: ignore
            columns = [_flat(x), _flat(y)]
        elif spec.kind == "rate":
            columns = [_flat(spec.time.values(arrays, stream))]  # type: ignore[union-attr]
        else:
            t, y = ak.broadcast_arrays(spec.time.values(arrays, stream), spec.y.values(arrays, stream))  # type: ignore
            columns = [_flat(t), _flat(y)]
        with self._lock:
            if spec.reset == "file" and self.file is not None and file != self.file:
                self._reset()
            self.file = file
            if not len(columns[0]):
                return 0
            if spec.kind in ("rate", "mean"):
                self._follow(float(np.nanmax(columns[0])) if np.isfinite(columns[0]).any() else math.nan)
                target = self._hist
                if target is None:
                    return 0
                if spec.kind == "rate":
                    target.fill(columns[0])
                else:
                    target.fill(columns[0], sample=columns[1])
            else:
                self._target().fill(*columns)
            return len(columns[0])

    def _reset(self) -> None:
        self._slices.clear()
        self._hist = None if self.spec.kind in ("rate", "mean") else self._new()

    def _target(self) -> hist.Hist:
        if not isinstance(self.spec.reset, float):
            assert self._hist is not None
            return self._hist
        now = self.clock()
        width = self.spec.reset / WINDOW_SLICES
        if not self._slices or now - self._slices[-1][0] >= width:
            self._slices.append((now, self._new()))
        return self._slices[-1][1]

    def _follow(self, newest: float) -> None:
        """Move the time axis so that it ends just after ``newest``, keeping what is still in the span."""
        if not math.isfinite(newest):
            return
        bins = self.spec.bins[0]
        width = self.spec.span / bins
        end = (math.floor(newest / width) + 1) * width
        if self._hist is None:
            self._hist = self._new(end - self.spec.span)
            return
        old_end = self._hist.axes[0].edges[-1]
        if newest < old_end:
            return
        shift = int(round((end - old_end) / width))
        moved = self._new(end - self.spec.span)
        if shift < bins:
            moved.view()[: bins - shift] = self._hist.view()[shift:]
        self._hist = moved

    def expire(self) -> bool:
        """Drop sliding-window slices that left the window; True when something was dropped."""
        if not isinstance(self.spec.reset, float):
            return False
        with self._lock:
            horizon = self.clock() - self.spec.reset
            dropped = False
            while self._slices and self._slices[0][0] < horizon:
                self._slices.popleft()
                dropped = True
            return dropped

    # ---- reading -----------------------------------------------------------------

    def current(self) -> hist.Hist:
        """A copy of the histogram as it stands (the window's sum for a sliding window)."""
        with self._lock:
            if isinstance(self.spec.reset, float):
                total = self._new()
                for _, part in self._slices:
                    total += part
                return total
            if self._hist is None:  # a time graph before its first record
                return self._new(math.floor(time.time()) - self.spec.span)
            return self._hist.copy()

    def to_uhi(self) -> dict:
        """The histogram as uhi JSON data (``uhi.io.json.default``) with page metadata."""
        from uhi.io.json import default

        h = self.current()
        data = default(h)
        spec = self.spec
        data["metadata"] = {"kind": spec.kind, "title": spec.title or spec.name, "stream": spec.stream,
                            "cut": spec.cut or "", "entries": entries_of(h),
                            "xlabel": spec.xlabel or (spec.x.text if spec.x else "time"),
                            "ylabel": spec.ylabel or (spec.y.text if spec.y else ("rate [Hz]" if spec.kind == "rate"
                                                                                   else "entries"))}
        return data
