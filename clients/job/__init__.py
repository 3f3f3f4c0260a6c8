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

- ``settings``: :class:`InputModule`, the input settings (:data:`SETTINGS`) and the subscription they make.
- ``modules``: :class:`Module`, the built-ins :class:`EventDump` and :class:`Histogram`.
- ``runner``: :class:`Job`, :class:`Path` and the run loop; :class:`RunSummary` says why a run stopped.
- ``cli``: the ``ddsjob`` command (:func:`main`) and :func:`load_job_file`.
"""

from __future__ import annotations

from ..texthist import text_histogram
from .cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, load_job_file, main
from .modules import BUILTIN_MODULES, EventDump, Histogram, Module
from .runner import (
    CONNECTION_LOST,
    ERROR,
    INTERRUPTED,
    MAX_RECORDS,
    SHUTDOWN,
    TIMEOUT,
    Job,
    ModuleCount,
    Path,
    RunSummary,
)
from .settings import DEFAULT_TIMEOUT, SETTINGS, InputModule, Setting

__all__ = [
    "BUILTIN_MODULES",
    "CONNECTION_LOST",
    "DEFAULT_TIMEOUT",
    "ERROR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "INTERRUPTED",
    "MAX_RECORDS",
    "SETTINGS",
    "SHUTDOWN",
    "TIMEOUT",
    "EventDump",
    "Histogram",
    "InputModule",
    "Job",
    "Module",
    "ModuleCount",
    "Path",
    "RunSummary",
    "Setting",
    "load_job_file",
    "main",
    "text_histogram",
]
