"""Several servers for one client: the server list, and where a client is in the data.

A client may be given a list of ``"host:port"`` (or one comma-separated string).
:func:`server_list` turns every accepted spelling into ``[(host, port), ...]``;
:class:`DDSClient` tries them in order and keeps the first that accepts.

With ``resume=True`` a client whose server goes away reconnects (to the same
list, first entry first) and continues where it was: :class:`Position` keeps,
per stream, the file and entry of the last record handed to the caller, so the
new session starts at that file and what was handed out already is dropped.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np

from .records import RecordBatch, RecordSet

__all__ = ["Position", "parse_address", "server_list", "server_text"]

DEFAULT_PORT = 9090


def parse_address(address) -> tuple[str, int]:
    """``(host, port)`` of ``"host:port"``, ``"host"`` (port 9090), ``"[::1]:9090"`` or a ``(host, port)`` pair."""
    if isinstance(address, (tuple, list)) and len(address) == 2:
        host, port = address
    elif isinstance(address, str) and address.strip():
        text = address.strip()
        if text.startswith("["):  # [IPv6]:port
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else DEFAULT_PORT
        elif text.count(":") == 1:
            host, port = text.split(":")
        else:
            host, port = text, DEFAULT_PORT
    else:
        raise ValueError(f"address must be 'host:port' or (host, port), not {address!r}")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"port in address {address!r} must be a number") from None
    if not 0 < port < 65536 or not host:
        raise ValueError(f"address {address!r} needs a host and a port between 1 and 65535")
    return str(host), port


def _one(text: str, port: int) -> tuple[str, int]:
    text = text.strip()
    host, given = parse_address(text)
    has_port = "]:" in text if text.startswith("[") else text.count(":") == 1
    return host, given if has_port else int(port)


def server_list(host: object = "localhost", port: int = DEFAULT_PORT) -> list[tuple[str, int]]:
    """Every server a client may use, in the order to try them.

    Args:
        host (str, list or tuple): a host name (then ``port`` is its port), a ``"host:port"``,
            a comma-separated string of them, a list of them, or a ``(host, port)`` pair.
        port (int): the port of an entry that names none; default 9090.

    Raises:
        ValueError: an entry is not a host, ``"host:port"`` or ``"[IPv6]:port"``, or the list is empty.
    """
    if isinstance(host, tuple) and len(host) == 2 and (
        (isinstance(host[1], int) and not isinstance(host[1], bool)) or (isinstance(host[1], str) and host[1].isdigit())
    ):  # a (host, port) pair
        return [parse_address(host)]
    if isinstance(host, str):
        entries: Iterable[object] = host.split(",")
    elif isinstance(host, (list, tuple)):
        entries = host
    else:
        raise ValueError(f"server must be 'host:port', a list of them or a comma-separated string, not {host!r}")
    out = []
    for entry in entries:
        if isinstance(entry, tuple):
            out.extend(server_list(entry, port))
        elif isinstance(entry, str):
            if entry.strip():
                out.append(_one(entry, port))
        else:
            raise ValueError(f"a server must be 'host:port', not {entry!r}")
    if not out:
        raise ValueError(f"no server in {host!r}")
    return out


def server_text(servers: list[tuple[str, int]]) -> str:
    """``"hostA:9090,hostB:9091"``: a server list as one string (IPv6 hosts in brackets)."""
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in servers)


class Position:
    """Per stream, the file and entry of the last record handed to the caller.

    File names order as the server orders them (by name), so ``(file, entry)``
    pairs compare in data order.
    """

    def __init__(self) -> None:
        self.last: dict[str, tuple[str, int]] = {}
        self.moved_to: str | None = None  # the file a go_to_file / go_to_next_file moved to

    def clear(self, file: str | None = None) -> None:
        """The client moved (``go_to_file``): what comes next may repeat what came before."""
        self.last.clear()
        self.moved_to = file

    def restart_file(self) -> str | None:
        """The file a new session starts at to miss nothing: the earliest of the streams' last files."""
        if self.last:
            return min(f for f, _ in self.last.values())
        return self.moved_to

    def note_set(self, rs: RecordSet) -> None:
        for stream, entry in rs.entries.items():
            self.last[stream] = (rs.file, int(entry))

    def note_batch(self, batch: RecordBatch) -> None:
        if batch.stream is not None and len(batch.entries):
            self.last[batch.stream] = (batch.file, int(np.asarray(batch.entries)[-1]))
        elif isinstance(batch.entries, dict):
            for stream, entries in batch.entries.items():
                got = np.asarray(entries)[np.asarray(entries) >= 0]
                if len(got):
                    self.last[stream] = (batch.file, int(got[-1]))

    def seen_set(self, rs: RecordSet) -> bool:
        """True when every record of ``rs`` was handed out already (before a reconnect)."""
        return bool(rs.entries) and all(self._seen(s, rs.file, e) for s, e in rs.entries.items())

    def _seen(self, stream: str, file: str, entry: int) -> bool:
        last = self.last.get(stream)
        return last is not None and (file, int(entry)) <= last

    def fresh_batch(self, batch: RecordBatch) -> RecordBatch | None:
        """``batch`` without the records handed out already; None when nothing is left."""
        if batch.stream is None:  # a synced batch: kept whole when any of its records is new
            entries = batch.entries if isinstance(batch.entries, dict) else {}
            new = any(e >= 0 and not self._seen(s, batch.file, int(e)) for s, es in entries.items() for e in es)
            return batch if new else None
        last = self.last.get(batch.stream)
        if last is None or batch.file > last[0]:
            return batch
        if batch.file < last[0]:
            return None
        keep = np.asarray(batch.entries) > last[1]
        if keep.all():
            return batch
        if not keep.any():
            return None
        out = copy.copy(batch)  # every other attribute as it came
        out.entries = np.asarray(batch.entries)[keep]
        out.arrays = batch.arrays[keep]
        return out
