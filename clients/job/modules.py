"""Job modules: the :class:`Module` base, the built-ins :class:`EventDump` and :class:`Histogram`,
and how a path turns what it is given (a name, a class, an object, a function) into a module.
"""

from __future__ import annotations

import ast
import math
import sys
from collections.abc import Callable
from typing import Any

from dispatcher.suggest import did_you_mean

from ..texthist import text_histogram

__all__ = ["BUILTIN_MODULES", "EventDump", "Histogram", "Module", "as_module", "module_name"]


def _literal(text: str) -> Any:
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

    def __init__(self, **config: Any):
        self.set(**config)

    def set(self, **config: Any) -> Module:
        """Change settings: ``set(every=10)``.

        Raises:
            ValueError: the module has no such setting, naming the closest and every one it has.
        """
        for key, value in config.items():
            if key.startswith("_") or not hasattr(type(self), key) or callable(getattr(type(self), key)):
                known = did_you_mean(key, self.settings(), kind="settings")
                raise ValueError(f"{type(self).__name__} has no setting {key!r}; {known}")
            setattr(self, key, value)
        return self

    def settings(self) -> dict:
        """``{setting: value}`` of every configurable setting."""
        out = {}
        for cls in reversed(type(self).__mro__):
            for key, value in vars(cls).items():
                descriptor = isinstance(value, (property, classmethod, staticmethod))
                if not key.startswith("_") and not callable(value) and not descriptor:
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

    def process(self, record_set: Any) -> bool | None:
        """Called for each record set; return False to stop the path for this one."""
        return None

    def end(self) -> None:
        """Called once after the last record set, however the run ended."""


class _FunctionModule(Module):
    """A plain function ``f(record_set)`` used as a module."""

    def __init__(self, function: Callable[[Any], Any]):
        self.function = function
        self.name = getattr(function, "__name__", "function")

    def process(self, record_set: Any) -> Any:
        return self.function(record_set)


def _format_value(value: Any, full: bool) -> str:
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

    branches: list | None = None
    every = 1
    full = False
    out: Any = None

    def begin(self) -> None:
        self.seen = 0

    def cmd(self, command: str) -> Module:
        if command.strip().lower() in ("dump fragments", "dump all", "dump"):
            self.full = True
            return self
        return super().cmd(command)

    def format(self, record_set: Any) -> str:
        pieces = []
        for stream, record in record_set.records.items():
            names = self.branches if self.branches is not None else list(record)
            values = " ".join(f"{b}={_format_value(record[b], self.full)}" for b in names if b in record)
            pieces.append(f"{stream}[{record_set.entries.get(stream)}] {values}")
        missing = f" (missing: {', '.join(record_set.missing)})" if record_set.missing else ""
        return f"{record_set.file} " + " | ".join(pieces) + missing

    def process(self, record_set: Any) -> None:
        self.seen = getattr(self, "seen", 0) + 1
        if (self.seen - 1) % max(1, int(self.every)) == 0:
            print(self.format(record_set), file=self.out or sys.stdout, flush=True)


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
    range: tuple = (0.0, 900.0)
    title: str | None = None
    width = 50
    show = True
    out: Any = None

    _BUFFER = 4096

    def __init__(self, **config: Any):
        super().__init__(**config)
        self.hist: Any = None
        self._pending: list = []
        self._n = 0
        self._sum = 0.0
        self._sum2 = 0.0

    def begin(self) -> None:
        import hist

        low, high = (float(x) for x in self.range)
        if not high > low or int(self.bins) < 1:
            raise ValueError(f"Histogram of {self.stream}.{self.branch}: need bins >= 1 and low < high, "
                             f"not bins={self.bins!r}, range={self.range!r}")
        self.hist = hist.Hist(hist.axis.Regular(int(self.bins), low, high, name=self.branch,
                                                label=self.title or f"{self.stream} {self.branch}"))
        self._pending, self._n, self._sum, self._sum2 = [], 0, 0.0, 0.0

    def process(self, record_set: Any) -> None:
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

    def end(self) -> None:
        self.flush()
        if self.show and self.hist is not None:
            print(self.render(), file=self.out or sys.stdout, flush=True)


#: modules ``mod("Name")`` and ``ddsjob -m Name`` know by name
BUILTIN_MODULES: dict[str, type[Module]] = {"EventDump": EventDump, "Histogram": Histogram}


def as_module(module: Any, config: dict) -> Any:
    """What a path runs for ``module``: a built-in's name, a class, an object with ``process``, or a function.

    Args:
        module: what the user gave.
        config (dict): settings for it; a function takes none.

    Raises:
        ValueError: an unknown built-in name, naming the closest and every built-in.
        TypeError: anything that cannot be a module.
    """
    if isinstance(module, str):
        cls = BUILTIN_MODULES.get(module)
        if cls is None:
            known = did_you_mean(module, BUILTIN_MODULES, kind="built-in")
            raise ValueError(f"no built-in module {module!r}; {known}; or give a module object, class or function")
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


def module_name(module: Any) -> str:
    """A module's name: its ``module_name``, else its ``name``, else its class name."""
    return getattr(module, "module_name", None) or getattr(module, "name", None) or type(module).__name__
