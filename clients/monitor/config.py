"""Load and check a monitor config (TOML): histograms, packages, page layout.

A file looks like this (``demo/monitor.toml`` is a complete one)::

    [monitor]
    title = "Near detector"      # the page title
    update_interval = 0.2        # seconds: changed packages are published at most this often
    stale_after = 10             # seconds without a change before a package shows red
    keep_up = "file"             # the DDS keep-up mode of the monitor's sessions

    [[histogram]]
    name = "nhits"               # unique; the object's name in its package
    stream = "DaqSnarl"
    x = "nhits"                  # a branch or an expression (clients.monitor.quantity)
    bins = 90
    range = [0, 900]
    cut = "trigsrc == 1"         # optional; a selection, run on the server
    reset = "file"               # "never" (default), "file", or seconds of a sliding window

    [[histogram]]                # 2-D: x and y, bins and range per axis
    name = "adc_vs_plane"
    stream = "DaqSnarl"
    x = "plane"
    y = "adc"
    bins = [97, 50]
    range = [[0, 486], [0, 2000]]

    [[histogram]]                # a time graph: "rate" (records per second) or "mean" (of y)
    name = "trigger_rate"
    kind = "mean"
    stream = "DaqMonitor"
    y = "trigger_rate"
    time = "time"                # the branch holding unix seconds; default "time"
    span = 300                   # seconds shown; the axis follows the newest record
    bins = 150

    [[package]]                  # a named set of histograms; one serial for all of them
    name = "daq"
    histograms = ["nhits", "adc_vs_plane", "trigger_rate"]
    stale_after = 5

    [[tab]]                      # the page: tabs, each a grid of canvases
    title = "DAQ"
    columns = 2
    [[tab.canvas]]
    object = "nhits"             # a histogram; with package = "...", an object of a published package
    title = "Hits per snarl"
    logy = true
    xlines = [300]               # reference lines (ylines: horizontal)

Histograms in no package go to package ``main``; without tabs, each package gets
one. Every mistake raises :class:`ConfigError` naming the file, the line, the key
and what would have been right.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dispatcher.suggest import did_you_mean

from .places import KeyPath, key_lines, line_of
from .quantity import Quantity, QuantityError, parse_quantity

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["CanvasSpec", "ConfigError", "HistogramSpec", "MonitorConfig", "PackageSpec", "TabSpec", "load_config",
           "parse_config"]

KINDS = ("hist1d", "hist2d", "rate", "mean")
TIME_KINDS = ("rate", "mean")
RESETS = ("never", "file")
KEEP_UPS = ("file", "all", "record")
DEFAULT_PACKAGE = "main"
MAX_BINS = 100_000

_TOP = ("monitor", "histogram", "package", "tab")
_MONITOR = ("title", "update_interval", "stale_after", "keep_up")
_HISTOGRAM = ("name", "stream", "kind", "x", "y", "time", "bins", "range", "span", "cut", "reset", "title",
              "xlabel", "ylabel")
_PACKAGE = ("name", "histograms", "stale_after")
_TAB = ("title", "columns", "canvas")
_CANVAS = ("object", "package", "title", "logx", "logy", "logz", "xlines", "ylines")


class ConfigError(ValueError):
    """A monitor config is wrong; ``str(err)`` names the file, line and key, and what would be right."""


@dataclass(frozen=True)
class HistogramSpec:
    """One histogram or time graph of the config.

    Args:
        name (str): unique name, the object's name in its package.
        stream (str): the DDS stream it is filled from.
        kind (str): one of ``KINDS``.
        x (Quantity | None): the x quantity (histograms).
        y (Quantity | None): the y quantity (2-D histograms, ``mean`` time graphs).
        time (Quantity | None): the time quantity, unix seconds (time graphs).
        bins (tuple[int, ...]): bins per axis.
        ranges (tuple[tuple[float, float], ...]): (low, high) per axis; for time graphs (0, span).
        cut (str | None): selection run on the server.
        reset (str | float): ``"never"``, ``"file"``, or the seconds of a sliding window.
        title (str), xlabel (str), ylabel (str): labels for the page.
        line (int): where it is declared, for later messages.
        key_lines (tuple[tuple[str, int], ...]): the line of each of its keys.
    """

    name: str
    stream: str
    kind: str
    x: Quantity | None
    y: Quantity | None
    time: Quantity | None
    bins: tuple[int, ...]
    ranges: tuple[tuple[float, float], ...]
    cut: str | None = None
    reset: str | float = "never"
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    line: int = 0
    key_lines: tuple[tuple[str, int], ...] = ()

    def line_of(self, key: str) -> int:
        """The line of one of its keys in the config file (else the histogram's own line)."""
        return dict(self.key_lines).get(key, self.line)

    @property
    def span(self) -> float:
        """Seconds shown by a time graph."""
        return self.ranges[0][1] - self.ranges[0][0]

    @property
    def branches(self) -> frozenset[str]:
        """Every branch its quantities read."""
        found: set[str] = set()
        for q in (self.x, self.y, self.time):
            if q is not None:
                found |= q.branches
        return frozenset(found)


@dataclass(frozen=True)
class PackageSpec:
    """A named set of histograms sharing one serial number.

    Args:
        name (str): the package name.
        histograms (tuple[str, ...]): names of its histograms.
        stale_after (float): seconds without a change before the page paints it red.
    """

    name: str
    histograms: tuple[str, ...]
    stale_after: float


@dataclass(frozen=True)
class CanvasSpec:
    """One plot on the page."""

    object: str
    package: str
    title: str = ""
    logx: bool = False
    logy: bool = False
    logz: bool = False
    xlines: tuple[float, ...] = ()
    ylines: tuple[float, ...] = ()


@dataclass(frozen=True)
class TabSpec:
    """One tab: a grid of canvases, ``columns`` wide."""

    title: str
    columns: int
    canvases: tuple[CanvasSpec, ...]


@dataclass(frozen=True)
class MonitorConfig:
    """A checked monitor config (see the module docstring for the file)."""

    path: str
    title: str = "DDS online monitor"
    update_interval: float = 0.2
    stale_after: float = 10.0
    keep_up: str = "file"
    histograms: dict[str, HistogramSpec] = field(default_factory=dict)
    packages: dict[str, PackageSpec] = field(default_factory=dict)
    tabs: tuple[TabSpec, ...] = ()

    def package_of(self, histogram: str) -> str:
        """The package holding a histogram of the config."""
        for package in self.packages.values():
            if histogram in package.histograms:
                return package.name
        raise KeyError(histogram)

    def layout(self) -> dict:
        """The page layout as JSON-ready data."""
        return {
            "title": self.title,
            "stale_after": self.stale_after,
            "packages": {p.name: {"stale_after": p.stale_after, "histograms": list(p.histograms)}
                         for p in self.packages.values()},
            "tabs": [{"title": t.title, "columns": t.columns,
                      "canvases": [{"object": c.object, "package": c.package, "title": c.title, "logx": c.logx,
                                    "logy": c.logy, "logz": c.logz, "xlines": list(c.xlines),
                                    "ylines": list(c.ylines)} for c in t.canvases]}
                     for t in self.tabs],
        }


def load_config(path: str | Path) -> MonitorConfig:
    """Read and check a monitor config file.

    Args:
        path (str | Path): the TOML file.

    Raises:
        ConfigError: the file is missing, not TOML, or a key is wrong (with file, line and key).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read monitor config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"monitor config {path} is not UTF-8 text: {exc}") from None
    return parse_config(text, str(path))


def parse_config(text: str, path: str = "<config>") -> MonitorConfig:
    """Check a monitor config given as TOML text.

    Args:
        text (str): the TOML.
        path (str): the file name used in messages; default ``"<config>"``.

    Raises:
        ConfigError: with file, line and key.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return _Checker(path, key_lines(text)).check(data)


class _Checker:
    def __init__(self, path: str, lines: dict[KeyPath, int]):
        self.path = path
        self.lines = lines

    # ---- messages ---------------------------------------------------------------

    def fail(self, at: KeyPath, what: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}, line {line_of(self.lines, at)}: {what}: {problem}")

    def unknown_keys(self, table: dict, allowed: tuple[str, ...], at: KeyPath, what: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(at + (key,), what, f"unknown key {key!r}; "
                                + did_you_mean(key, allowed, kind="keys"))

    def get(self, table: dict, key: str, at: KeyPath, what: str, kind: type | tuple, default: Any = None,
            required: bool = False, describe: str = "") -> Any:
        if key not in table:
            if required:
                raise self.fail(at, what, f"key {key!r} is missing; it must be {describe}")
            return default
        value = table[key]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _as_tuple(kind))
        if not ok:
            raise self.fail(at + (key,), what, f"key {key!r} must be {describe}, not {value!r}")
        return value

    def positive(self, table: dict, key: str, at: KeyPath, what: str, default: float) -> float:
        value = self.get(table, key, at, what, (int, float), default, describe="a positive number")
        if not (math.isfinite(value) and value > 0):
            raise self.fail(at + (key,), what, f"key {key!r} must be a positive number, not {value!r}")
        return float(value)

    # ---- the file -----------------------------------------------------------------

    def check(self, data: dict) -> MonitorConfig:
        self.unknown_keys(data, _TOP, (), "top level")
        monitor = self.get(data, "monitor", (), "top level", dict, {}, describe="a table [monitor]")
        what = "[monitor]"
        self.unknown_keys(monitor, _MONITOR, ("monitor",), what)
        at = ("monitor",)
        title = self.get(monitor, "title", at, what, str, "DDS online monitor", describe="a string")
        interval = self.positive(monitor, "update_interval", at, what, 0.2)
        stale = self.positive(monitor, "stale_after", at, what, 10.0)
        keep_up = self.get(monitor, "keep_up", at, what, str, "file", describe=f"one of {', '.join(KEEP_UPS)}")
        if keep_up not in KEEP_UPS:
            raise self.fail(at + ("keep_up",), what, f"key 'keep_up' must be one of {', '.join(KEEP_UPS)}, "
                            f"not {keep_up!r}")

        tables = self.get(data, "histogram", (), "top level", list, [], describe="an array of [[histogram]] tables")
        if not tables:
            raise self.fail((), "top level", "no [[histogram]] declared; a monitor needs at least one "
                            "(name, stream, x, bins, range)")
        histograms: dict[str, HistogramSpec] = {}
        for i, table in enumerate(tables):
            spec = self.histogram(table, ("histogram", i))
            if spec.name in histograms:
                raise self.fail(("histogram", i, "name"), f"histogram {spec.name!r}",
                                f"the name is already used by the histogram on line {histograms[spec.name].line}")
            histograms[spec.name] = spec

        packages = self.packages(data, histograms, stale)
        tabs = self.tabs(data, histograms, packages)
        return MonitorConfig(path=self.path, title=title, update_interval=interval, stale_after=stale,
                             keep_up=keep_up, histograms=histograms, packages=packages, tabs=tabs)

    def histogram(self, table: Any, at: KeyPath) -> HistogramSpec:
        if not isinstance(table, dict):
            raise self.fail(at, "histogram", "must be a table [[histogram]]")
        what = f"[[histogram]] number {at[1] + 1}"
        name = self.get(table, "name", at, what, str, required=True, describe="a unique name (a string)")
        if not name.strip() or "/" in name:
            raise self.fail(at + ("name",), what, f"key 'name' must be a non-empty name without '/', not {name!r}")
        what = f"histogram {name!r}"
        self.unknown_keys(table, _HISTOGRAM, at, what)
        stream = self.get(table, "stream", at, what, str, required=True, describe="a stream (tree) name")
        kind = self.get(table, "kind", at, what, str, None, describe=f"one of {', '.join(KINDS)}")
        if kind is None:
            kind = "hist2d" if "y" in table else "hist1d"
        if kind not in KINDS:
            raise self.fail(at + ("kind",), what, f"key 'kind' must be one of {', '.join(KINDS)}; "
                            + did_you_mean(kind, KINDS, kind="kinds"))

        def quantity(key: str, default: str | None = None, needed: bool = False) -> Quantity | None:
            text = self.get(table, key, at, what, str, default, required=needed,
                            describe="a branch name or an expression (a string)")
            if text is None:
                return None
            try:
                return parse_quantity(text)
            except QuantityError as exc:
                raise self.fail(at + (key,), what, f"key {key!r}: {exc}") from None

        def unused(*keys: str) -> None:
            for key in keys:
                if key in table:
                    raise self.fail(at + (key,), what, f"key {key!r} does not apply to kind {kind!r}")

        if kind == "hist1d":
            unused("y", "time", "span")
            x, y, time = quantity("x", needed=True), None, None
            bins = (self.bins(table, at, what, 1, None),)
            ranges: tuple[tuple[float, float], ...] = (
                self.axis_range(table.get("range"), at + ("range",), what, "range = [low, high]"),)
        elif kind == "hist2d":
            unused("time", "span")
            x, y, time = quantity("x", needed=True), quantity("y", needed=True), None
            bins = tuple(self.bins(table, at, what, 2, None))
            raw = table.get("range")
            if not (isinstance(raw, list) and len(raw) == 2 and all(isinstance(r, list) for r in raw)):
                raise self.fail(at + ("range",), what, "key 'range' must be [[xlow, xhigh], [ylow, yhigh]], "
                                f"not {raw!r}")
            ranges = tuple(self.axis_range(r, at + ("range",), what, "range = [[xlow, xhigh], [ylow, yhigh]]")
                           for r in raw)
        else:
            unused("x", "range")
            if kind == "rate":
                unused("y")
            x = None
            y = quantity("y", needed=True) if kind == "mean" else None
            time = quantity("time", default="time")
            span = self.positive(table, "span", at, what, 300.0)
            bins = (self.bins(table, at, what, 1, 100),)
            ranges = ((0.0, span),)
        reset = table.get("reset", "never")
        if isinstance(reset, bool) or not (reset in RESETS or (isinstance(reset, (int, float)) and reset > 0)):
            raise self.fail(at + ("reset",), what, "key 'reset' must be \"never\", \"file\" or the seconds of a "
                            f"sliding window (a positive number), not {reset!r}")
        if kind in TIME_KINDS and not isinstance(reset, str):
            raise self.fail(at + ("reset",), what, "key 'reset' of a time graph must be \"never\" or \"file\" "
                            f"(its window is 'span'), not {reset!r}")
        cut = self.get(table, "cut", at, what, str, None, describe="a selection (a string)")
        labels = {k: self.get(table, k, at, what, str, "", describe="a string") for k in ("title", "xlabel", "ylabel")}
        return HistogramSpec(name=name, stream=stream, kind=kind, x=x, y=y, time=time, bins=bins, ranges=ranges,
                             cut=cut or None, reset=float(reset) if not isinstance(reset, str) else reset,
                             line=line_of(self.lines, at), **labels,
                             key_lines=tuple((path[-1], n) for path, n in self.lines.items()
                                             if len(path) == len(at) + 1 and path[:-1] == at))

    def bins(self, table: dict, at: KeyPath, what: str, axes: int, default: int | None) -> Any:
        raw = table.get("bins", default)
        right = "a positive whole number" if axes == 1 else "[xbins, ybins], positive whole numbers"
        values = [raw] if axes == 1 else raw
        if raw is None:
            raise self.fail(at, what, f"key 'bins' is missing; it must be {right}")
        if not (isinstance(values, list) and len(values) == axes
                and all(isinstance(b, int) and not isinstance(b, bool) and 0 < b <= MAX_BINS for b in values)):
            raise self.fail(at + ("bins",), what, f"key 'bins' must be {right} (at most {MAX_BINS}), not {raw!r}")
        return raw

    def axis_range(self, raw: Any, at: KeyPath, what: str, right: str) -> tuple[float, float]:
        if raw is None:
            raise self.fail(at[:-1], what, f"key 'range' is missing; it must be {right}")
        if not (isinstance(raw, list) and len(raw) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in raw)
                and raw[0] < raw[1]):
            raise self.fail(at, what, f"key 'range' must be {right} with low < high, not {raw!r}")
        return float(raw[0]), float(raw[1])

    def packages(self, data: dict, histograms: dict[str, HistogramSpec], stale: float) -> dict[str, PackageSpec]:
        tables = self.get(data, "package", (), "top level", list, [], describe="an array of [[package]] tables")
        packages: dict[str, PackageSpec] = {}
        owner: dict[str, str] = {}
        for i, table in enumerate(tables):
            at = ("package", i)
            if not isinstance(table, dict):
                raise self.fail(at, "package", "must be a table [[package]]")
            what = f"[[package]] number {i + 1}"
            name = self.get(table, "name", at, what, str, required=True, describe="a name (a string)")
            what = f"package {name!r}"
            self.unknown_keys(table, _PACKAGE, at, what)
            if name in packages:
                raise self.fail(at + ("name",), what, "the name is already used by another [[package]]")
            members = self.get(table, "histograms", at, what, list, required=True,
                               describe="a list of histogram names")
            for member in members:
                if member not in histograms:
                    raise self.fail(at + ("histograms",), what, f"no histogram {member!r}; "
                                    + did_you_mean(str(member), histograms, kind="histograms"))
                if member in owner:
                    raise self.fail(at + ("histograms",), what, f"histogram {member!r} is already in package "
                                    f"{owner[member]!r}; a histogram belongs to one package")
                owner[member] = name
            packages[name] = PackageSpec(name, tuple(members), self.positive(table, "stale_after", at, what, stale))
        rest = tuple(h for h in histograms if h not in owner)
        if rest:
            if DEFAULT_PACKAGE in packages:
                raise self.fail(("package",), "package 'main'", f"histograms {', '.join(rest)} are in no package, "
                                "and 'main' (where they would go) is declared: list them in a [[package]]")
            packages[DEFAULT_PACKAGE] = PackageSpec(DEFAULT_PACKAGE, rest, stale)
        return packages

    def tabs(self, data: dict, histograms: dict[str, HistogramSpec],
             packages: dict[str, PackageSpec]) -> tuple[TabSpec, ...]:
        tables = self.get(data, "tab", (), "top level", list, [], describe="an array of [[tab]] tables")
        if not tables:
            return tuple(TabSpec(p.name, 2, tuple(CanvasSpec(h, p.name, histograms[h].title or h)
                                                  for h in p.histograms)) for p in packages.values())
        tabs = []
        for i, table in enumerate(tables):
            at = ("tab", i)
            if not isinstance(table, dict):
                raise self.fail(at, "tab", "must be a table [[tab]]")
            what = f"[[tab]] number {i + 1}"
            self.unknown_keys(table, _TAB, at, what)
            title = self.get(table, "title", at, what, str, required=True, describe="a title (a string)")
            what = f"tab {title!r}"
            columns = self.get(table, "columns", at, what, int, 2, describe="a whole number from 1 to 12")
            if not 1 <= columns <= 12:
                raise self.fail(at + ("columns",), what, f"key 'columns' must be a whole number from 1 to 12, "
                                f"not {columns}")
            canvases = self.get(table, "canvas", at, what, list, [], describe="an array of [[tab.canvas]] tables")
            tabs.append(TabSpec(title, columns, tuple(self.canvas(c, at + ("canvas", j), what, histograms, packages)
                                                      for j, c in enumerate(canvases))))
        return tuple(tabs)

    def canvas(self, table: Any, at: KeyPath, tab: str, histograms: dict[str, HistogramSpec],
               packages: dict[str, PackageSpec]) -> CanvasSpec:
        what = f"{tab}, canvas {at[-1] + 1}"
        if not isinstance(table, dict):
            raise self.fail(at, what, "must be a table [[tab.canvas]]")
        self.unknown_keys(table, _CANVAS, at, what)
        obj = self.get(table, "object", at, what, str, required=True, describe="the name of a histogram")
        package = self.get(table, "package", at, what, str, None, describe="a package name (a string)")
        if package is None:
            if obj not in histograms:
                raise self.fail(at + ("object",), what, f"no histogram {obj!r} (for an object of a published "
                                "package, also give package = \"...\"); "
                                + did_you_mean(obj, histograms, kind="histograms"))
            package = next(p.name for p in packages.values() if obj in p.histograms)
        elif package in packages and obj not in packages[package].histograms:
            raise self.fail(at + ("object",), what, f"package {package!r} has no histogram {obj!r}; "
                            + did_you_mean(obj, packages[package].histograms, kind="histograms"))

        def flag(key: str) -> bool:
            return bool(self.get(table, key, at, what, bool, False, describe="true or false"))

        def lines(key: str) -> tuple[float, ...]:
            raw = self.get(table, key, at, what, list, [], describe="a list of numbers")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
                raise self.fail(at + (key,), what, f"key {key!r} must be a list of numbers, not {raw!r}")
            return tuple(float(v) for v in raw)

        title = self.get(table, "title", at, what, str, "", describe="a string")
        if not title and obj in histograms:
            title = histograms[obj].title or obj
        return CanvasSpec(obj, package, title or obj, flag("logx"), flag("logy"), flag("logz"), lines("xlines"),
                          lines("ylines"))


def _as_tuple(kind: type | tuple) -> tuple:
    return kind if isinstance(kind, tuple) else (kind,)
