"""Histogram packages: a name, an update serial, and a set of histograms (uhi JSON).

As in the Double Chooz monitor, a package is the unit that changes: viewers
compare serials and fetch a package again only when its serial grew. Packages
come from two sides:

- the config's packages, filled from DDS (:class:`clients.monitor.filling.HistogramFiller`);
  :meth:`PackageStore.publish_changes` bumps the serial of each one whose
  histograms changed since the last call;
- packages published over HTTP by other producers (:meth:`PackageStore.publish`),
  checked by loading every object with ``hist`` before it is accepted.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import MonitorConfig
from .filling import HistogramFiller, entries_of

__all__ = ["MAX_BINS", "MAX_OBJECTS", "Package", "PackageError", "PackageStore", "check_published"]

NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: most objects in a published package, and most bins (with flow) in one object
MAX_OBJECTS = 200
MAX_BINS = 1_000_000


class PackageError(ValueError):
    """A published package was refused; ``str(err)`` says what was wrong and what would be right.

    Attributes:
        status (int): the HTTP status to answer with.
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Package:
    """One package as served.

    Args:
        name (str): its name.
        source (str): ``"dds"`` (filled by this monitor) or ``"published"``.
        stale_after (float): seconds without a change before the page paints it red.
        serial (int): grows by at least one with every change; 0 before the first.
        updated (float): unix time of the last change (0 before the first).
        objects (dict): ``{object name: uhi JSON data}`` as of ``serial``.
    """

    name: str
    source: str
    stale_after: float
    serial: int = 0
    updated: float = 0.0
    objects: dict[str, Any] = field(default_factory=dict)
    body: bytes = b""

    def render(self) -> None:
        """Serialise the package once per change (every reader gets the same bytes)."""
        from uhi.io.json import default

        self.body = json.dumps({"name": self.name, "serial": self.serial, "updated": self.updated,
                                "source": self.source, "stale_after": self.stale_after, "objects": self.objects},
                               default=default, separators=(",", ":")).encode()


class PackageStore:
    """Every package of one monitor; thread-safe (feeds fill, the web app reads).

    Args:
        config (MonitorConfig): the config's packages and histograms.
        fillers (dict[str, HistogramFiller]): a filler per histogram of the config.
        clock (Callable[[], float]): unix time; default ``time.time``.
    """

    def __init__(self, config: MonitorConfig, fillers: dict[str, HistogramFiller],
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.fillers = fillers
        self.clock = clock
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self.packages: dict[str, Package] = {}
        for spec in config.packages.values():
            package = Package(spec.name, "dds", spec.stale_after)
            package.objects = {h: fillers[h].to_uhi() for h in spec.histograms}
            package.render()
            self.packages[spec.name] = package
        self._owner = {h: spec.name for spec in config.packages.values() for h in spec.histograms}

    def touched(self, histogram: str) -> None:
        """Note that a histogram of the config changed (called by the feeds after a fill)."""
        with self._lock:
            self._dirty.add(self._owner[histogram])

    def publish_changes(self) -> list[dict]:
        """Bump the serial of every config package that changed; returns ``[{"name", "serial"}]`` of those."""
        for name, filler in self.fillers.items():
            if filler.expire():
                self.touched(name)
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        changed = []
        for name in sorted(dirty):
            package = self.packages[name]
            objects = {h: self.fillers[h].to_uhi() for h in self.config.packages[name].histograms}
            with self._lock:
                package.objects = objects
                package.serial += 1
                package.updated = self.clock()
                package.render()
                changed.append({"name": name, "serial": package.serial})
        return changed

    def publish(self, payload: Any) -> dict:
        """Take a whole package from another producer.

        Args:
            payload (Any): parsed JSON, ``{"name", "objects": {name: uhi JSON}}``, optionally
                ``"serial"`` (the producer's own; the stored serial still always grows) and
                ``"stale_after"`` (seconds).

        Returns:
            dict: ``{"name", "serial"}`` as stored.

        Raises:
            PackageError: what was wrong with it (status 400), or the name is one this monitor fills (409).
        """
        name, objects, serial, stale = check_published(payload, self.config.stale_after)
        with self._lock:
            package = self.packages.get(name)
            if package is not None and package.source == "dds":
                raise PackageError(f"package {name!r} is filled from DDS by this monitor (config "
                                   f"{self.config.path}); publish under another name", 409)
            if package is None:
                package = self.packages[name] = Package(name, "published", stale)
            package.stale_after = stale
            package.objects = objects
            package.serial = max(package.serial + 1, serial)
            package.updated = self.clock()
            package.render()
            return {"name": name, "serial": package.serial}

    def listing(self) -> list[dict]:
        """``[{"name", "serial"}]`` of every package, by name."""
        with self._lock:
            return [{"name": p.name, "serial": p.serial} for p in sorted(self.packages.values(), key=lambda p: p.name)]

    def body(self, name: str) -> bytes | None:
        """The package as JSON bytes, or None when there is none of that name."""
        with self._lock:
            package = self.packages.get(name)
            return package.body if package is not None else None


def check_published(payload: Any, default_stale: float) -> tuple[str, dict, int, float]:
    """Check a published package and load each of its objects with ``hist``.

    Args:
        payload (Any): the parsed JSON body.
        default_stale (float): ``stale_after`` when the payload gives none.

    Returns:
        tuple: name, ``{object: uhi JSON data}`` (re-serialised by ``hist``, metadata kept and
        ``entries`` added), serial, stale_after.

    Raises:
        PackageError: what is wrong, and what would be right.
    """
    import hist
    from uhi.io.json import default, object_hook

    if not isinstance(payload, dict):
        raise PackageError('a package must be a JSON object {"name": ..., "objects": {name: uhi JSON}}')
    unknown = set(payload) - {"name", "objects", "serial", "stale_after"}
    if unknown:
        raise PackageError(f"unknown key(s) {', '.join(sorted(unknown))} in package; "
                           "allowed: name, objects, serial, stale_after")
    name = payload.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise PackageError(f"package name must be 1 to 64 letters, digits, '_', '.' or '-', not {name!r}")
    objects = payload.get("objects")
    if not isinstance(objects, dict) or not objects or len(objects) > MAX_OBJECTS:
        raise PackageError(f"package {name!r}: 'objects' must map 1 to {MAX_OBJECTS} names to uhi JSON histograms")
    serial = payload.get("serial", 0)
    if not isinstance(serial, int) or isinstance(serial, bool) or not 0 <= serial < 2**53:
        raise PackageError(f"package {name!r}: 'serial' must be a whole number >= 0, not {serial!r}")
    stale = payload.get("stale_after", default_stale)
    if isinstance(stale, bool) or not isinstance(stale, (int, float)) or not (math.isfinite(stale) and stale > 0):
        raise PackageError(f"package {name!r}: 'stale_after' must be a positive number of seconds, not {stale!r}")
    loaded = {}
    for key, data in objects.items():
        where = f"package {name!r}, object {key!r}"
        if not NAME.match(key):
            raise PackageError(f"{where}: an object name must be 1 to 64 letters, digits, '_', '.' or '-'")
        if not isinstance(data, dict) or "uhi_schema" not in data:
            raise PackageError(f"{where}: must be a uhi JSON histogram (with uhi_schema, axes, storage)")
        _check_size(data, where)
        try:
            h = hist.Hist(json.loads(json.dumps(data), object_hook=object_hook))
        except Exception as exc:  # anything hist cannot load is refused with its reason
            raise PackageError(f"{where}: not a histogram hist can load: {type(exc).__name__}: {exc}") from None
        out = default(h)
        given = data.get("metadata")
        metadata: dict = given if isinstance(given, dict) else {}
        out["metadata"] = {**{k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool))},
                           "entries": entries_of(h)}
        out["metadata"].setdefault("kind", "hist2d" if len(h.axes) == 2 else "hist1d")
        out["metadata"].setdefault("title", key)
        if len(h.axes) > 2:
            raise PackageError(f"{where}: has {len(h.axes)} axes; the page draws 1-D and 2-D histograms")
        loaded[key] = out
    return name, loaded, serial, float(stale)


def _check_size(data: dict, where: str) -> None:
    """Refuse axes that would make hist allocate more than :data:`MAX_BINS` bins, before it tries."""
    axes = data.get("axes")
    if not isinstance(axes, list) or not axes:
        raise PackageError(f"{where}: 'axes' must be a non-empty list")
    total = 1
    for axis in axes:
        if not isinstance(axis, dict):
            raise PackageError(f"{where}: each axis must be an object")
        bins = axis.get("bins")
        if bins is None:
            edges = axis.get("edges", axis.get("categories", []))
            bins = len(edges) if isinstance(edges, list) else 0
        if not isinstance(bins, int) or isinstance(bins, bool) or not 0 < bins <= MAX_BINS:
            raise PackageError(f"{where}: an axis must have 1 to {MAX_BINS} bins, not {bins!r}")
        total *= bins + 2
    if total > MAX_BINS:
        raise PackageError(f"{where}: {total} bins in all; at most {MAX_BINS}")
