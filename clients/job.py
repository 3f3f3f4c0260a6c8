"""MINOS-style analysis jobs on live DDS data: an input module and paths of modules.

The MINOS job ran a path of modules over the record sets its input module read
from the dispatcher, until the input reported an error condition (a timeout)::

    JobC j;
    j.Input.Set("DDSKeepUpMode=All");
    j.Input.Set("DDSTimeOut=120");
    j.Path("Demo").Mod("EventDump").Cmd("Dump Fragments");
    j.Path("Demo").Run();

The same here::

    job = Job()
    job.input.set("DDSKeepUpMode=All")
    job.input.set("DDSTimeOut=120")
    job.path("Demo").mod("EventDump").cmd("Dump Fragments")
    summary = job.path("Demo").run()

A module is an object with ``process(record_set)`` (and optionally ``begin()``
and ``end()``); ``process`` returning False stops the path for that record set,
like a filter. A record set is a :class:`clients.RecordSet`: ``rs["DaqSnarl"]``
is ``{branch: value}``. Built-in modules: :class:`EventDump` and
:class:`Histogram`. ``ddsjob`` runs the modules of a Python file from the
command line (see :func:`main`).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import math
import os
import sys
import time
from dataclasses import dataclass, field

from dispatcher.subscription import KeepUp, Subscription, SubscriptionError

from .client import DDSClient
from .errors import DDSConnectionError, DDSError, DDSTimeout, MessageType
from .iterate import parse_address

__all__ = [
    "EventDump",
    "Histogram",
    "InputModule",
    "Job",
    "Module",
    "ModuleCount",
    "Path",
    "RunSummary",
    "text_histogram",
]

DEFAULT_TIMEOUT = 120.0  # seconds, as in MINOS

#: why a run ended
TIMEOUT = "timeout"
MAX_RECORDS = "max_records"
INTERRUPTED = "interrupted"
SHUTDOWN = "shutdown"
CONNECTION_LOST = "connection lost"
ERROR = "error"


# ----------------------------------------------------------------------------- input


def _text(value) -> str:
    return str(value).strip()


def _streams(value) -> tuple:
    if isinstance(value, str):
        value = [s.strip() for s in value.split(",")]
    names = tuple(s for s in value if s)
    if not names:
        raise ValueError("DDSStreams needs at least one stream name, e.g. DDSStreams=DaqSnarl,DaqMonitor")
    return names


def _keep_up(value) -> KeepUp:
    try:
        return KeepUp.parse(value)
    except SubscriptionError as exc:
        raise ValueError(f"DDSKeepUpMode: {exc}") from None


def _seconds(what):
    def parse(value) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a number of seconds, not {value!r}") from None
        if not number > 0 or math.isinf(number):
            raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
        return number

    return parse


def _count(what):
    def parse(value) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a whole number, not {value!r}") from None
        if number < 1:
            raise ValueError(f"{what} must be at least 1, not {value!r}")
        return number

    return parse


def _server(value) -> str:
    host, port = parse_address(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address keeps its brackets


def _selection(value):
    if value is None or isinstance(value, dict):
        return value
    text = _text(value)
    return text or None


def _branches(value):
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        value = [b.strip() for b in value.split(",") if b.strip()]
    return list(value)


def _optional_name(value):
    text = _text(value) if value is not None else ""
    return text or None


#: setting -> (MINOS-style key, parser, default, meaning)
SETTINGS = {
    "server": ("DDSServer", _server, "localhost:9090", "host:port of the ddsparentserver"),
    "streams": ("DDSStreams", _streams, ("DaqSnarl",), "comma-separated stream (tree) names"),
    "keep_up": ("DDSKeepUpMode", _keep_up, KeepUp.FILE, "All, FileKeepUp or RecordKeepUp (all, file, record)"),
    "timeout": ("DDSTimeOut", _seconds("DDSTimeOut"), DEFAULT_TIMEOUT,
                "seconds to wait for the next record set; the run ends when it passes"),
    "selection": ("DDSSelection", _selection, None, "a selection cut, run on the server"),
    "branches": ("DDSBranches", _branches, None, "comma-separated branches to receive (default all)"),
    "start": ("DDSStart", _text, "current", "current, oldest, latest or a file name"),
    "prescale": ("DDSPrescale", _count("DDSPrescale"), 1, "deliver every n-th passing record per stream"),
    "sync": ("DDSSync", _optional_name, None, "branch to build record sets across streams on"),
    "max_sync_delay": ("DDSMaxSyncDelay", _seconds("DDSMaxSyncDelay"), 2.0,
                       "seconds to wait for a stream missing from a synced set"),
    "advance_by": ("DDSAdvanceBy", _count("DDSAdvanceBy"), 1, "take every n-th record set, skipping the others"),
    "connect_timeout": ("DDSConnectTimeOut", _seconds("DDSConnectTimeOut"), 10.0,
                        "seconds to wait for the server to answer the connection"),
}
_BY_KEY = {}
for _name, (_key, *_rest) in SETTINGS.items():
    _BY_KEY[_key.lower()] = _name
    _BY_KEY[_name] = _name
    _BY_KEY[_name.replace("_", "")] = _name


def _setting_name(key: str) -> str:
    name = _BY_KEY.get(key.strip().lower()) or _BY_KEY.get(key.strip().lower().replace("_", ""))
    if name is None:
        known = [k for k, *_ in SETTINGS.values()]
        close = difflib.get_close_matches(key.strip(), known + list(SETTINGS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown input setting {key!r}; {hint}(settings: {', '.join(known)})")
    return name


class InputModule:
    """The DDS input of a job: which server, and the subscription (MINOS's ``JobC::Input``).

    Settings are strings ``"DDSKeepUpMode=All"`` or keywords ``keep_up="all"``;
    :data:`SETTINGS` lists them all with their MINOS-style keys.
    """

    def __init__(self):
        self.settings = {name: default for name, (_, _, default, _) in SETTINGS.items()}

    def set(self, *settings: str, **keywords) -> InputModule:
        """Change settings: ``set("DDSTimeOut=120", "DDSStreams=DaqSnarl,DaqMonitor", keep_up="all")``.

        Raises:
            ValueError: an unknown setting or a value that cannot be right, naming both.
        """
        for text in settings:
            if not isinstance(text, str) or "=" not in text:
                raise ValueError(f"an input setting reads KEY=VALUE (e.g. 'DDSKeepUpMode=All'), not {text!r}")
            key, _, value = text.partition("=")
            self._set(key, value)
        for key, value in keywords.items():
            self._set(key, value)
        return self

    Set = set  # the MINOS spelling

    def _set(self, key: str, value) -> None:
        name = _setting_name(key)
        parse = SETTINGS[name][1]
        self.settings[name] = parse(value)

    def __getattr__(self, name):
        settings = self.__dict__.get("settings")
        if settings is not None and name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def subscription(self) -> Subscription:
        """The subscription these settings make."""
        s = self.settings
        branches = s["branches"]
        if isinstance(branches, list):
            branches = {stream: branches for stream in s["streams"]}
        try:
            return Subscription(streams=s["streams"], keep_up=s["keep_up"], selection=s["selection"],
                                branches=branches, start=s["start"], prescale=s["prescale"], sync=s["sync"],
                                max_sync_delay=s["max_sync_delay"])
        except SubscriptionError as exc:
            raise DDSError(str(exc), MessageType.BAD_SUBSCRIPTION) from None

    def connect(self) -> DDSClient:
        """A client connected to the server and subscribed."""
        subscription = self.subscription()
        host, port = parse_address(self.settings["server"])
        client = DDSClient(host, port, connect_timeout=self.settings["connect_timeout"])
        try:
            client.subscribe(subscription)
        except BaseException:
            client.close()
            raise
        return client

    def describe(self) -> str:
        s = self.settings
        sel = s["selection"]
        parts = [f"server {s['server']}", f"streams {','.join(s['streams'])}", f"keep-up {s['keep_up'].value}",
                 f"start {s['start']}", f"timeout {s['timeout']:g} s"]
        if sel:
            parts.append(f"selection {sel!r}")
        if s["prescale"] > 1:
            parts.append(f"prescale {s['prescale']}")
        if s["sync"]:
            parts.append(f"sync on {s['sync']}")
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"<InputModule {self.describe()}>"


# ----------------------------------------------------------------------------- modules


def _literal(text: str):
    """A setting's value from text: a Python literal (number, tuple, True) or else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


class Module:
    """Base of job modules. Override ``begin``, ``process`` and ``end``.

    Configurable settings are the public class attributes; give them as keywords
    (``EventDump(every=10)``, ``path.mod("EventDump", every=10)``), with
    :meth:`set`, or as MINOS-style commands with :meth:`cmd` (``"Set every=10"``).
    """

    #: the module's name in a path and in the run summary; default: the class name
    name: str | None = None

    def __init__(self, **config):
        self.set(**config)

    def set(self, **config) -> Module:
        for key, value in config.items():
            if key.startswith("_") or not hasattr(type(self), key) or callable(getattr(type(self), key)):
                known = [k for k in self.settings()]
                raise ValueError(f"{type(self).__name__} has no setting {key!r} (settings: {', '.join(known)})")
            setattr(self, key, value)
        return self

    def settings(self) -> dict:
        """``{setting: value}`` of every configurable setting."""
        out = {}
        for cls in reversed(type(self).__mro__):
            for key, value in vars(cls).items():
                if not key.startswith("_") and not callable(value) and not isinstance(value, (property, classmethod, staticmethod)):
                    out[key] = getattr(self, key)
        return out

    def cmd(self, command: str) -> Module:
        """A MINOS-style command: ``"Set key=value"`` (or just ``"key=value"``)."""
        text = command.strip()
        if text.lower().startswith("set "):
            text = text[4:].strip()
        if "=" not in text:
            raise ValueError(f"{self.module_name}: unknown command {command!r}; use 'Set key=value'")
        key, _, value = text.partition("=")
        return self.set(**{key.strip(): _literal(value.strip())})

    @property
    def module_name(self) -> str:
        return self.name or type(self).__name__

    def begin(self) -> None:
        """Called once before the first record set."""

    def process(self, record_set) -> bool | None:
        """Called for each record set; return False to stop the path for this one."""
        return None

    def end(self) -> None:
        """Called once after the last record set, however the run ended."""


class _FunctionModule(Module):
    """A plain function ``f(record_set)`` used as a module."""

    def __init__(self, function):
        self.function = function
        self.name = getattr(function, "__name__", "function")

    def process(self, record_set):
        return self.function(record_set)


def _format_value(value, full: bool) -> str:
    if isinstance(value, list):
        if full:
            return "[" + ", ".join(_format_value(v, True) for v in value) + "]"
        return f"[{len(value)}]"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) >= 1e5 else f"{value:.6g}"
    return str(value)


class EventDump(Module):
    """Prints a one-line summary of each record set (``Dump Fragments``: every value).

    Settings:
        branches (list or None): the branches to show; default all (lists as ``[length]``).
        every (int): print every n-th record set; default 1.
        full (bool): print every value of list branches too (the ``"Dump Fragments"`` command); default False.
        out (file or None): where to print; default stdout.
    """

    branches = None
    every = 1
    full = False
    out = None

    def begin(self):
        self.seen = 0

    def cmd(self, command: str) -> Module:
        if command.strip().lower() in ("dump fragments", "dump all", "dump"):
            self.full = True
            return self
        return super().cmd(command)

    def format(self, record_set) -> str:
        pieces = []
        for stream, record in record_set.records.items():
            names = self.branches if self.branches is not None else list(record)
            values = " ".join(f"{b}={_format_value(record[b], self.full)}" for b in names if b in record)
            pieces.append(f"{stream}[{record_set.entries.get(stream)}] {values}")
        missing = f" (missing: {', '.join(record_set.missing)})" if record_set.missing else ""
        return f"{record_set.file} " + " | ".join(pieces) + missing

    def process(self, record_set):
        self.seen = getattr(self, "seen", 0) + 1
        if (self.seen - 1) % max(1, int(self.every)) == 0:
            print(self.format(record_set), file=self.out or sys.stdout, flush=True)


def text_histogram(h, *, width: int = 50, title: str | None = None, stats: tuple | None = None) -> str:
    """A 1-D ``hist.Hist`` drawn with ``#`` bars, one line per bin, for any terminal or log.

    Args:
        h (hist.Hist): a one-dimensional histogram.
        width (int): characters of the longest bar; default 50.
        title (str): first line; default the axis label.
        stats (tuple): ``(entries, mean, std)`` to show instead of what the bins say.
    """
    axis = h.axes[0]
    counts = h.values()
    flow = h.values(flow=True)
    under, over = float(flow[0]), float(flow[-1])
    edges = axis.edges
    if stats is None:
        total = float(counts.sum())
        centers = axis.centers
        mean = float((counts * centers).sum() / total) if total else math.nan
        std = float(math.sqrt(max(0.0, (counts * (centers - mean) ** 2).sum() / total))) if total else math.nan
        stats = (int(total + under + over), mean, std)
    entries, mean, std = stats
    head = title or axis.label or axis.name or "histogram"
    lines = [f"{head}: {entries} entries, mean {mean:.4g}, std dev {std:.4g}"
             f" (underflow {under:g}, overflow {over:g})"]
    top = float(counts.max()) if len(counts) else 0.0
    label = max(len(f"{e:g}") for e in edges)
    digits = max(1, len(f"{top:g}"))
    for lo, hi, c in zip(edges[:-1], edges[1:], counts):
        bar = "#" * (round(width * c / top) if top else 0)
        if c and not bar:
            bar = "."
        lines.append(f"{lo:>{label}g} - {hi:<{label}g} |{bar:<{width}}| {c:>{digits}g}")
    return "\n".join(lines)


class Histogram(Module):
    """Fills a 1-D histogram (scikit-hep ``hist``) with a branch of a stream; prints it at the end.

    A list branch (e.g. ``adc``) fills every element. After the run, ``.hist`` holds
    the histogram.

    Settings:
        stream (str): default ``"DaqSnarl"``.
        branch (str): default ``"nhits"``.
        bins (int): default 30.
        range (tuple): ``(low, high)``; default ``(0, 900)``.
        title (str or None): default ``"<stream> <branch>"``.
        width (int): characters of the longest bar when printed; default 50.
        show (bool): print at the end; default True.
        out (file or None): where to print; default stdout.
    """

    stream = "DaqSnarl"
    branch = "nhits"
    bins = 30
    range = (0.0, 900.0)
    title = None
    width = 50
    show = True
    out = None

    _BUFFER = 4096

    def __init__(self, **config):
        super().__init__(**config)
        self.hist = None
        self._pending = []
        self._n = 0
        self._sum = 0.0
        self._sum2 = 0.0

    def begin(self):
        import hist

        low, high = (float(x) for x in self.range)
        if not high > low or int(self.bins) < 1:
            raise ValueError(f"Histogram of {self.stream}.{self.branch}: need bins >= 1 and low < high, "
                             f"not bins={self.bins!r}, range={self.range!r}")
        self.hist = hist.Hist(hist.axis.Regular(int(self.bins), low, high, name=self.branch,
                                                label=self.title or f"{self.stream} {self.branch}"))
        self._pending, self._n, self._sum, self._sum2 = [], 0, 0.0, 0.0

    def process(self, record_set):
        record = record_set.records.get(self.stream)
        if record is None or self.branch not in record:
            return None
        value = record[self.branch]
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is not None:
                self._pending.append(v)
                self._n += 1
                self._sum += v
                self._sum2 += v * v
        if len(self._pending) >= self._BUFFER:
            self.flush()
        return None

    def flush(self) -> None:
        """Fill the buffered values into ``.hist``."""
        if self._pending and self.hist is not None:
            self.hist.fill(self._pending)
            self._pending = []

    @property
    def mean(self) -> float:
        return self._sum / self._n if self._n else math.nan

    @property
    def std(self) -> float:
        if not self._n:
            return math.nan
        return math.sqrt(max(0.0, self._sum2 / self._n - self.mean ** 2))

    def render(self) -> str:
        self.flush()
        return text_histogram(self.hist, width=int(self.width), stats=(self._n, self.mean, self.std))

    def end(self):
        self.flush()
        if self.show and self.hist is not None:
            print(self.render(), file=self.out or sys.stdout, flush=True)


#: modules ``mod("Name")`` and ``ddsjob -m Name`` know by name
BUILTIN_MODULES = {"EventDump": EventDump, "Histogram": Histogram}


def _as_module(module, config: dict):
    if isinstance(module, str):
        cls = BUILTIN_MODULES.get(module)
        if cls is None:
            close = difflib.get_close_matches(module, list(BUILTIN_MODULES), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"no built-in module {module!r}; {hint}(built-in: {', '.join(BUILTIN_MODULES)}; "
                             f"or give a module object or class)")
        return cls(**config)
    if isinstance(module, type):
        return module(**config)
    if hasattr(module, "process"):
        if config:
            module.set(**config)
        return module
    if callable(module):
        if config:
            raise TypeError("a function used as a module takes no settings")
        return _FunctionModule(module)
    raise TypeError(f"a module is a name of a built-in, a class or object with process(record_set), "
                    f"or a function; not {module!r}")


# ----------------------------------------------------------------------------- paths and runs


@dataclass
class ModuleCount:
    """How many record sets a module saw, and what it said."""

    processed: int = 0
    passed: int = 0
    failed: int = 0  # returned False: the path stopped there


@dataclass
class RunSummary:
    """What a run of a path did and why it stopped.

    Attributes:
        path (str): the path's name.
        records (int): record sets read from the input.
        modules (dict): ``{module name: ModuleCount}``, in path order.
        reason (str): ``"timeout"``, ``"max_records"``, ``"interrupted"``, ``"shutdown"``,
            ``"connection lost"`` or ``"error"``.
        message (str): the readable why.
        message_type (MessageType or None): the server's answer that ended the run, if any.
        seconds (float): wall time of the run.
        streams (dict): ``{stream: records read}``.
    """

    path: str
    records: int = 0
    modules: dict = field(default_factory=dict)
    reason: str = ""
    message: str = ""
    message_type: MessageType | None = None
    seconds: float = 0.0
    streams: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The run ended the normal way: timeout, max_records or a server shutdown."""
        return self.reason in (TIMEOUT, MAX_RECORDS, SHUTDOWN)

    def __str__(self) -> str:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        per_stream = ", ".join(f"{s} {n}" for s, n in self.streams.items())
        lines = [f"path {self.path}: {self.records} record sets in {self.seconds:.1f} s ({rate:.0f}/s)"
                 + (f" [{per_stream}]" if per_stream else ""),
                 f"stopped: {self.reason}: {self.message}"]
        if self.modules:
            width = max(len(n) for n in self.modules)
            lines.append(f"  {'module':<{width}}  {'processed':>9}  {'passed':>9}  {'failed':>9}")
            for name, c in self.modules.items():
                lines.append(f"  {name:<{width}}  {c.processed:>9}  {c.passed:>9}  {c.failed:>9}")
        return "\n".join(lines)


class Path:
    """An ordered list of modules run on every record set (MINOS's ``JobCPath``)."""

    def __init__(self, job: Job, name: str):
        self.job = job
        self.name = name
        self.modules: list = []

    def mod(self, module, **config) -> Path:
        """Append a module: a built-in's name (``"EventDump"``), a class, an object or a function.

        Keywords configure it. Returns the path, so calls chain: ``path.mod("EventDump").mod(mine)``.
        """
        self.modules.append(_as_module(module, config))
        return self

    Mod = mod

    def cmd(self, command: str) -> Path:
        """Send a command to the module added last: ``path.mod("EventDump").cmd("Dump Fragments")``."""
        if not self.modules:
            raise ValueError(f"path {self.name} has no module to send {command!r} to")
        self.modules[-1].cmd(command)
        return self

    Cmd = cmd

    def module(self, name: str):
        """The module called ``name`` in this path."""
        for m, n in zip(self.modules, self.names()):
            if n == name or _module_name(m) == name:
                return m
        raise KeyError(f"no module {name!r} in path {self.name} (modules: {', '.join(self.names())})")

    __getitem__ = module

    def names(self) -> list[str]:
        """Module names, unique within the path (a repeated one gets ``#2``, ``#3``...)."""
        seen: dict = {}
        out = []
        for m in self.modules:
            n = _module_name(m)
            seen[n] = seen.get(n, 0) + 1
            out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
        return out

    def run(self, max_records: int | None = None) -> RunSummary:
        """Run until the input reports an error condition (a timeout) or ``max_records`` record sets.

        Every module's ``begin`` runs before the first record set and ``end`` after the
        last, however the run ended. Ctrl-C ends the run (reason ``"interrupted"``).

        Raises:
            DDSConnectionError, DDSError: no server, or the subscription was refused.
            Whatever a module raises (after every begun module's ``end``).
        """
        return self.job.run(self.name, max_records=max_records)

    Run = run

    def __repr__(self) -> str:
        return f"<Path {self.name}: {' -> '.join(self.names()) or 'no modules'}>"


def _module_name(module) -> str:
    return getattr(module, "module_name", None) or getattr(module, "name", None) or type(module).__name__


class Job:
    """A MINOS-style job: ``job.input`` (the DDS input module) and named paths of modules.

    Args:
        *settings, **keywords: input settings, as for :meth:`InputModule.set`.
    """

    def __init__(self, *settings: str, **keywords):
        self.input = InputModule().set(*settings, **keywords)
        self.paths: dict = {}

    Input = property(lambda self: self.input)

    def path(self, name: str = "Main") -> Path:
        """The path called ``name``, made on first use."""
        if name not in self.paths:
            self.paths[name] = Path(self, name)
        return self.paths[name]

    Path = path

    def run(self, path: str | None = None, max_records: int | None = None) -> RunSummary:
        """Run a path (default: the first one made); see :meth:`Path.run`."""
        if path is None:
            if not self.paths:
                raise ValueError("the job has no path: add modules with job.path('Main').mod(...)")
            path = next(iter(self.paths))
        if path not in self.paths:
            raise KeyError(f"no path {path!r} (paths: {', '.join(self.paths) or 'none'})")
        if max_records is not None and max_records < 0:
            raise ValueError(f"max_records must be None or >= 0, not {max_records!r}")
        p = self.paths[path]
        modules = list(p.modules)
        names = p.names()
        summary = RunSummary(path, modules={n: ModuleCount() for n in names})
        began = time.monotonic()
        client = self.input.connect()
        started = []
        try:
            for m in modules:
                if hasattr(m, "begin"):
                    m.begin()
                started.append(m)
            self._loop(client, modules, names, summary, max_records)
        finally:
            try:
                client.close()
            finally:
                for m in started:
                    if hasattr(m, "end"):
                        m.end()
                summary.seconds = time.monotonic() - began
        return summary

    def _loop(self, client, modules, names, summary, max_records):
        timeout = self.input.settings["timeout"]
        advance_by = self.input.settings["advance_by"]
        counts = [summary.modules[n] for n in names]
        while True:
            if max_records is not None and summary.records >= max_records:
                summary.reason, summary.message = MAX_RECORDS, f"{max_records} record sets read"
                return
            try:
                record_set = client.next(timeout=timeout, advance_by=advance_by)
            except KeyboardInterrupt:
                summary.reason, summary.message = INTERRUPTED, "interrupted (Ctrl-C)"
                return
            except DDSTimeout as exc:
                summary.reason, summary.message, summary.message_type = TIMEOUT, str(exc), exc.message_type
                return
            except DDSConnectionError as exc:
                summary.reason, summary.message, summary.message_type = CONNECTION_LOST, str(exc), exc.message_type
                return
            except DDSError as exc:
                reason = SHUTDOWN if exc.message_type is MessageType.SHUTDOWN else ERROR
                summary.reason, summary.message, summary.message_type = reason, str(exc), exc.message_type
                return
            summary.records += 1
            for stream in record_set.records:
                summary.streams[stream] = summary.streams.get(stream, 0) + 1
            try:
                for m, count in zip(modules, counts):
                    count.processed += 1
                    if m.process(record_set) is False:
                        count.failed += 1
                        break
                    count.passed += 1
            except KeyboardInterrupt:
                summary.reason, summary.message = INTERRUPTED, "interrupted (Ctrl-C)"
                return


# ----------------------------------------------------------------------------- ddsjob

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def load_job_file(path: str, job: Job, path_name: str | None = None) -> str:
    """Add the modules a user's Python file defines to ``job``; return the path to run.

    The file is one of (checked in this order):

    - ``configure(job)``: a function that builds the job itself (paths, modules,
      input settings). Runs the path called ``path_name``, else the first one.
    - ``MODULES = [...]``: modules (objects, classes, functions or built-in names),
      run in this order in a path called ``Main``.
    - otherwise every :class:`Module` subclass defined in the file, in the order
      they are defined, each made with no arguments, in a path called ``Main``.
    """
    path = os.path.abspath(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"ddsjob_{stem}".replace("-", "_").replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickle look classes up there
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # helpers next to the file can be imported
    spec.loader.exec_module(module)
    found = vars(module)
    if callable(found.get("configure")):
        found["configure"](job)
        if not job.paths:
            job.path(path_name or "Main")
        return path_name or next(iter(job.paths))
    target = job.path(path_name or "Main")
    if "MODULES" in found:
        for m in found["MODULES"]:
            target.mod(m)
        return target.name
    classes = [v for v in found.values()
               if isinstance(v, type) and issubclass(v, Module) and v.__module__ == name]
    if not classes:
        raise ValueError(f"{path} defines no modules: define configure(job), a list MODULES = [...], "
                         f"or subclasses of clients.job.Module")
    for cls in classes:
        target.mod(cls)
    return target.name


def _build_cli():
    import click

    settings_help = "; ".join(f"{key}" for key, *_ in SETTINGS.values())

    @click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
    @click.option("-H", "--host", default=None, help="ddsparentserver host  [default: localhost]")
    @click.option("-p", "--port", type=click.IntRange(1, 65535), default=None,
                  help="ddsparentserver port  [default: 9090]")
    @click.option("-s", "--set", "settings", multiple=True, metavar="KEY=VALUE",
                  help=f"an input setting, repeatable, e.g. -s DDSKeepUpMode=All ({settings_help})")
    @click.option("-m", "--module", "modules", multiple=True, metavar="NAME",
                  help=f"append a built-in module ({', '.join(BUILTIN_MODULES)}), repeatable")
    @click.option("-n", "--max-records", type=click.IntRange(min=0), default=None,
                  help="stop after this many record sets")
    @click.option("--path", "path_name", default=None, help="the path of FILE to run [default: the first]")
    def ddsjob(file, host, port, settings, modules, max_records, path_name):
        """Run the analysis modules of FILE on live data from a ddsparentserver, MINOS-job style.

        FILE defines configure(job), or a list MODULES, or Module subclasses
        (see clients/job.py). Without FILE and -m, records are dumped with EventDump.
        The run ends when nothing new arrives within DDSTimeOut seconds (default 120).
        """
        job = Job()
        try:
            run_path = load_job_file(file, job, path_name) if file else (path_name or "Main")
            if settings:
                job.input.set(*settings)
            if host is not None or port is not None:
                old_host, old_port = parse_address(job.input.settings["server"])
                job.input.set(server=(host or old_host, port or old_port))
            target = job.path(run_path)
            for m in modules:
                target.mod(m)
            if not target.modules:
                target.mod("EventDump")
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        click.echo(f"ddsjob: path {run_path} ({' -> '.join(target.names())}); input: {job.input.describe()}",
                   err=True)
        try:
            summary = job.run(run_path, max_records=max_records)
        except DDSError as exc:
            click.echo(f"ddsjob: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        click.echo(str(summary))
        if summary.reason == INTERRUPTED:
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(EXIT_OK if summary.ok else EXIT_FAILED)

    return ddsjob


def main(argv=None):
    """Console script ``ddsjob``."""
    return _build_cli().main(args=argv, prog_name="ddsjob")


if __name__ == "__main__":
    main()
