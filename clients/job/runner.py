"""Paths of modules and the run loop: what a :class:`Job` does with its input, and the :class:`RunSummary`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..client import DDSClient
from ..errors import DDSConnectionError, DDSError, DDSTimeout, MessageType
from .modules import as_module, module_name
from .settings import InputModule

__all__ = [
    "CONNECTION_LOST",
    "ERROR",
    "INTERRUPTED",
    "MAX_RECORDS",
    "SHUTDOWN",
    "TIMEOUT",
    "Job",
    "ModuleCount",
    "Path",
    "RunSummary",
]

#: why a run ended
TIMEOUT = "timeout"
MAX_RECORDS = "max_records"
INTERRUPTED = "interrupted"
SHUTDOWN = "shutdown"
CONNECTION_LOST = "connection lost"
ERROR = "error"


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

    def mod(self, module: Any, **config: Any) -> Path:
        """Append a module: a built-in's name (``"EventDump"``), a class, an object or a function.

        Keywords configure it. Returns the path, so calls chain: ``path.mod("EventDump").mod(mine)``.
        """
        self.modules.append(as_module(module, config))
        return self

    Mod = mod

    def cmd(self, command: str) -> Path:
        """Send a command to the module added last: ``path.mod("EventDump").cmd("Dump Fragments")``."""
        if not self.modules:
            raise ValueError(f"path {self.name} has no module to send {command!r} to")
        self.modules[-1].cmd(command)
        return self

    Cmd = cmd

    def module(self, name: str) -> Any:
        """The module called ``name`` in this path."""
        for m, n in zip(self.modules, self.names()):
            if n == name or module_name(m) == name:
                return m
        raise KeyError(f"no module {name!r} in path {self.name} (modules: {', '.join(self.names())})")

    __getitem__ = module

    def names(self) -> list[str]:
        """Module names, unique within the path (a repeated one gets ``#2``, ``#3``...)."""
        seen: dict = {}
        out = []
        for m in self.modules:
            n = module_name(m)
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


class Job:
    """A MINOS-style job: ``job.input`` (the DDS input module) and named paths of modules.

    Args:
        *settings, **keywords: input settings, as for :meth:`InputModule.set`.
    """

    def __init__(self, *settings: str, **keywords: Any):
        self.input = InputModule().set(*settings, **keywords)
        self.paths: dict[str, Path] = {}

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

    def _loop(self, client: DDSClient, modules: list, names: list[str], summary: RunSummary,
              max_records: int | None) -> None:
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
