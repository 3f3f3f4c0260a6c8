"""How the parts of a data message make record sets: the reply layouts both sides import.

A data message carries *parts* (one stream's records from one file, see
``columnar``) and, in its header's ``info``, one of these layouts:

- :class:`SetsLayout` (``{"sets": [...]}``): each record set's members as
  ``(part, row)`` pairs, its file and the streams missing from it (``record``
  mode and synced ``next``).
- :class:`OrderLayout` (``{"order": [...]}``): single-record sets sent ahead;
  set ``i`` is the next unused row of part ``order[i]``.
- :class:`SyncBatchLayout` (``{"batch": {"length", "positions"}}``): a batch of
  synced sets; ``positions[stream]`` lists, for each record of that stream's
  part, the set it belongs to.

The server builds these objects and ``to_info`` turns them into JSON; the client
parses with ``from_info``, which checks every field and raises
:class:`~dispatcher.protocol.RemoteProtocolError` on anything malformed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .protocol import RemoteProtocolError


def _int(value: Any, what: str, lo: int = 0, hi: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value >= hi):
        raise RemoteProtocolError(f"malformed reply layout: {what} is {value!r}")
    return value


def _list(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise RemoteProtocolError(f"malformed reply layout: {what} is not a list")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RemoteProtocolError(f"malformed reply layout: {what} is not a string")
    return value


@dataclass(frozen=True)
class SetLayout:
    """One record set: its file, its members as ``(part, row)``, and the streams missing from it."""

    file: str
    members: tuple[tuple[int, int], ...]
    missing: tuple[str, ...] = ()

    def to_info(self) -> dict:
        return {"file": self.file, "members": [list(m) for m in self.members], "missing": list(self.missing)}

    @classmethod
    def from_info(cls, info: Any, nparts: int) -> SetLayout:
        if not isinstance(info, dict):
            raise RemoteProtocolError("malformed reply layout: a set is not an object")
        members = []
        for m in _list(info.get("members"), "members"):
            pair = _list(m, "a member")
            if len(pair) != 2:
                raise RemoteProtocolError("malformed reply layout: a member is not [part, row]")
            members.append((_int(pair[0], "a member's part", 0, nparts), _int(pair[1], "a member's row")))
        missing = tuple(_str(s, "a missing stream") for s in _list(info.get("missing", []), "missing"))
        return cls(_str(info.get("file"), "a set's file"), tuple(members), missing)


@dataclass(frozen=True)
class SetsLayout:
    sets: tuple[SetLayout, ...]

    def to_info(self) -> dict:
        return {"sets": [s.to_info() for s in self.sets]}


@dataclass(frozen=True)
class OrderLayout:
    order: tuple[int, ...]

    def to_info(self) -> dict:
        return {"order": list(self.order)}


@dataclass(frozen=True)
class SyncBatchLayout:
    length: int
    positions: dict[str, list[int]] = field(default_factory=dict)

    def to_info(self) -> dict:
        return {"batch": {"length": self.length, "positions": self.positions}}


Layout = SetsLayout | OrderLayout | SyncBatchLayout


def from_info(info: Any, nparts: int) -> Layout | None:
    """The layout a received data message declares (None: a plain batch of one part)."""
    if info is None or info == {}:
        return None
    if not isinstance(info, dict):
        raise RemoteProtocolError("malformed reply layout: info is not an object")
    if "order" in info:
        return OrderLayout(tuple(_int(i, "an order entry", 0, nparts) for i in _list(info["order"], "order")))
    if "sets" in info:
        return SetsLayout(tuple(SetLayout.from_info(s, nparts) for s in _list(info["sets"], "sets")))
    if "batch" in info:
        batch = info["batch"]
        if not isinstance(batch, dict):
            raise RemoteProtocolError("malformed reply layout: batch is not an object")
        length = _int(batch.get("length"), "batch length")
        positions = batch.get("positions")
        if not isinstance(positions, dict):
            raise RemoteProtocolError("malformed reply layout: batch positions is not an object")
        checked = {
            _str(s, "a stream"): [_int(r, "a batch position", 0, length) for r in _list(rows, "positions")]
            for s, rows in positions.items()
        }
        return SyncBatchLayout(length, checked)
    raise RemoteProtocolError(f"malformed reply layout: unknown keys {sorted(info)[:5]}")
