"""``iterate``: the live counterpart of ``uproot.iterate``.

Where ``uproot.iterate(files, expressions, cut, step_size=...)`` walks through
files that are finished, ``clients.iterate(address, streams, expressions, cut,
step_size=...)`` walks through what a ddsparentserver serves: the closed files
of the DAQ and then the open one as it grows, and ends once nothing new has
arrived for ``timeout`` seconds. The cut runs on the server, so only passing
records cross the network.

Each step holds one stream of one file (at most ``step_size`` records), like
uproot's steps hold one tree of one file. A step is returned as soon as it has
one record, so on a live file the steps are as small as the DAQ is slow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import awkward as ak
import numpy as np

from dispatcher.subscription import Subscription, SubscriptionError

from .client import DDSClient
from .errors import DDSError, DDSTimeout, MessageType
from .failover import parse_address, server_list

__all__ = ["Report", "iterate", "parse_address"]

LIBRARIES = ("ak", "np")


@dataclass(frozen=True)
class Report:
    """Where one step of :func:`iterate` came from.

    Attributes:
        stream (str): the stream (tree name).
        file (str): data file name inside the server's data directory.
        entry_start (int): entry of the step's first record in that file's tree.
        entry_stop (int): one past the entry of its last record. With a cut the
            records in between that failed it are not in the step.
        entries (numpy.ndarray): the int64 entry of every record of the step.
    """

    stream: str
    file: str
    entry_start: int
    entry_stop: int
    entries: np.ndarray

    # the names uproot's Report uses for the same numbers
    @property
    def tree_entry_start(self) -> int:
        return self.entry_start

    @property
    def tree_entry_stop(self) -> int:
        return self.entry_stop

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (f"<Report {self.stream} in {self.file}: entries {self.entry_start}..{self.entry_stop}, "
                f"{len(self.entries)} records>")


def _branches(streams: tuple, expressions):
    """``Subscription.branches`` from iterate's ``expressions``."""
    if expressions is None:
        return None
    if isinstance(expressions, str):
        expressions = [expressions]
    if isinstance(expressions, dict):
        return {s: list(v) if not isinstance(v, str) else [v] for s, v in expressions.items()}
    names = list(expressions)
    return {s: names for s in streams}


def _numpy(arrays: ak.Array) -> dict:
    """uproot's ``library="np"`` for a TTree: numbers (and fixed-size arrays of them) as numpy
    arrays, strings as object arrays of ``str``, lists as object arrays of arrays."""
    return {name: _column(arrays[name]) for name in arrays.fields}


def _column(column: ak.Array) -> np.ndarray:
    params = column.layout.parameters or {}
    if params.get("__array__") in ("string", "bytestring"):
        return _objects(column.to_list())
    if column.ndim == 1 and not column.fields:
        return ak.to_numpy(column)
    regular = None if column.fields else _regular(column)
    if regular is not None:
        return regular  # fixed-size arrays: an N-dimensional array, as uproot gives
    if column.ndim == 2 and not column.fields:
        counts = ak.to_numpy(ak.num(column, axis=1))
        flat = ak.to_numpy(ak.flatten(column, axis=None))
        return _objects(np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else [])
    return _objects([_item(x) for x in column])


def _regular(column: ak.Array) -> np.ndarray | None:
    """The column as one N-dimensional array when it is fixed-size arrays all the way down, else None
    (a jagged column whose lists happen to be equal is not)."""
    layout = column.layout
    if not isinstance(layout, ak.contents.RegularArray) and not (
        isinstance(layout, ak.contents.NumpyArray) and layout.data.ndim > 1
    ):
        return None
    try:
        return ak.to_numpy(column)
    except (ValueError, TypeError):
        return None


def _item(value):
    """One entry of a nested column as numpy: lists of numbers become arrays, records dicts."""
    if isinstance(value, ak.Array):
        return _column(value)
    if isinstance(value, ak.Record):
        return {k: _item(value[k]) for k in value.fields}
    return value


def _objects(items) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def iterate(address, streams, expressions=None, cut=None, *, step_size=1000, keep_up="all",
            start="oldest", timeout=10.0, library="ak", report=False, resume=False, compression=None,
            group=None) -> Iterator:
    """Iterate over the records a ddsparentserver serves, in steps, like ``uproot.iterate``.

    Args:
        address (str, list or tuple): ``"host:port"`` of the ddsparentserver (``"host"`` alone: port 9090);
            or several, as a list or one comma-separated string, tried in order (see ``DDSClient``).
        streams (str or list of str): the streams (tree names) to read.
        expressions (None, str, list of str or dict): the branches to fetch; None: all.
            With several streams, a list applies to each of them; a dict
            ``{stream: [names]}`` gives each its own.
        cut (None, str or dict): a selection, run on the server: one expression for
            every stream or ``{stream: expression}`` (see ``dispatcher.selection``).
        step_size (int): the most records per step; default 1000.
        keep_up (str): ``"all"`` (default: every record, never skipping), ``"file"`` or ``"record"``.
        start (str): ``"oldest"`` (default: the first file), ``"current"``, ``"latest"`` or a file name.
        timeout (float): end after this many seconds with nothing new; default 10.
        library (str): ``"ak"`` (default): an awkward Array per step; ``"np"``: a dict
            ``{branch: numpy array}`` (jagged branches as object arrays of arrays).
        report (bool): yield ``(arrays, Report)`` pairs instead of arrays; default False.
        resume (bool): when the server goes away, reconnect and continue where the steps were
            (``DDSClient(resume=True)``); default False.
        compression (str or None): ``"zstd"`` or ``"lz4"`` on the wire; default None.
        group (str or None): share the records with every other reader of this group name: each
            passing record goes to one of them (a farm; see ``Subscription(group=...)``). Asking for the
            next step acknowledges the last one; leaving the loop (``break``, the end) acknowledges all; an
            error of the server's ends it without, so another member gets the last step again; default None.

    Yields:
        One step: the passing records of one stream of one file, in entry order.

    Raises:
        DDSConnectionError: no server at ``address``.
        DDSError: the subscription was refused (``BAD_SUBSCRIPTION``, ``BAD_SELECTION``).

    Example:
        >>> for arrays in clients.iterate("localhost:9090", "DaqSnarl", ["snarl", "nhits"],
        ...                               cut="nhits > 100", timeout=5):   # doctest: +SKIP
        ...     print(len(arrays), ak.mean(arrays.nhits))
    """
    if library not in LIBRARIES:
        raise ValueError(f"library must be one of {', '.join(map(repr, LIBRARIES))}, not {library!r}")
    if isinstance(step_size, bool) or not isinstance(step_size, (int, np.integer)) or step_size < 1:
        raise ValueError(f"step_size must be a positive number of records, not {step_size!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    servers = server_list(address)
    stream_names = (streams,) if isinstance(streams, str) else tuple(streams)
    try:
        subscription = Subscription(streams=stream_names, keep_up=keep_up, selection=cut,
                                    branches=_branches(stream_names, expressions), start=start, group=group)
    except SubscriptionError as exc:
        raise DDSError(str(exc), MessageType.BAD_SUBSCRIPTION) from None
    return _steps(servers, subscription, int(step_size), float(timeout), library, report, resume, compression)


def _steps(servers, subscription, step_size, timeout, library, report, resume, compression):
    # connect and subscribe before the first step is asked for, so a wrong address or
    # a bad cut fails at the call, not at the first ``next()``
    client = DDSClient(servers, resume=resume, compression=compression)
    try:
        client.subscribe(subscription)
    except BaseException:
        client.close()
        raise
    return _generate(client, step_size, timeout, library, report)


def _generate(client: DDSClient, step_size, timeout, library, report):
    clean = True
    try:
        while True:
            try:
                batch = client.next_batch(step_size, timeout)
            except DDSTimeout:
                return
            arrays = batch.arrays if library == "ak" else _numpy(batch.arrays)
            if report:
                entries = np.asarray(batch.entries, dtype=np.int64)
                start = int(entries[0]) if len(entries) else 0
                stop = int(entries[-1]) + 1 if len(entries) else 0
                yield arrays, Report(batch.stream, batch.file, start, stop, entries)
            else:
                yield arrays
    except GeneratorExit:  # the caller left the loop: it had what it was given
        raise
    except BaseException:
        clean = False
        raise
    finally:
        client._close(clean=clean)
