"""``ddsjob``: run the modules of a user's Python file on live data, and the loader that reads that file."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import DDSError
from ..failover import server_list
from .modules import BUILTIN_MODULES, Module
from .runner import INTERRUPTED, Job
from .settings import SETTINGS

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "load_job_file", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # click's own exit status for a usage error
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

    Args:
        path (str): the Python file.
        job (Job): the job to add to.
        path_name (str or None): the path to run; default ``configure``'s first, else ``Main``.
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


def _build_cli() -> Any:
    # click is imported here, not at module level: importing clients.job stays light.
    import click

    settings_help = "; ".join(setting.key for setting in SETTINGS.values())

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
        (see clients/job/). Without FILE and -m, records are dumped with EventDump.
        The run ends when nothing new arrives within DDSTimeOut seconds (default 120).
        """
        job = Job()
        try:
            run_path = load_job_file(file, job, path_name) if file else (path_name or "Main")
            if settings:
                job.input.set(*settings)
            if host is not None or port is not None:
                old_host, old_port = server_list(job.input.settings["server"])[0]
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


def main(argv: Sequence[str] | None = None) -> Any:
    """Console script ``ddsjob``."""
    return _build_cli().main(args=argv, prog_name="ddsjob")
