"""Turn the records of one stream into branches uproot's TTree writer can write, and say what it cannot.

Received records may hold structs (``rec: {a, b}``): their members become branches
named ``rec.a``, ``rec.b`` (ROOT's split-branch names). A variable-length branch
``X`` gets its counter branch ``nX`` from the writer; a received ``nX`` holding the
same counts is that counter and is not written twice. A branch whose type the
writer cannot write (uproot 5 writes no nested variable-length lists, for one)
is skipped by name with the writer's reason, logged once per stream and type:
never dropped silently.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import awkward as ak
import numpy as np
import uproot

log = logging.getLogger("ddslogger")


@dataclass
class Columns:
    """What is written of one stream's records.

    Args:
        data (dict): ``{branch: awkward.Array}``, the columns to ``extend`` the tree with.
        types (dict): ``{branch: type text}``, the tree's schema (a change starts a new output file).
        skipped (dict): ``{branch: why}``, received branches that are not written.
    """

    data: dict[str, ak.Array]
    types: dict[str, str]
    skipped: dict[str, str] = field(default_factory=dict)


def _record_fields(array: ak.Array) -> list[str] | None:
    """The fields of a record type under any lists (None when the innermost content is no record)."""
    layout = ak.to_layout(array)
    while True:
        if layout.is_record:
            return list(layout.fields)
        if layout.is_list or layout.is_regular or layout.is_option or layout.is_indexed:
            if layout.is_list and layout.parameter("__array__") == "string":
                return None
            layout = layout.content
            continue
        return None


def _flatten(name: str, array: ak.Array, out: dict[str, ak.Array]) -> None:
    fields = _record_fields(array)
    if not fields:
        out[name] = array
        return
    for f in fields:
        _flatten(f"{name}.{f}", array[f], out)


def _is_jagged(array: ak.Array) -> bool:
    layout = ak.to_layout(array)
    return layout.is_list and layout.parameter("__array__") != "string"


class Writability:
    """Remembers which branch types the TTree writer can write; tries each new type once on a scratch file."""

    def __init__(self) -> None:
        self._known: dict[str, str | None] = {}

    def why_not(self, array: ak.Array, key: str | None = None) -> str | None:
        """None when the writer can write ``array``'s type (``key``: its text, when known), else the writer's reason."""
        if key is None:
            key = str(array.type.content)
        if key not in self._known:
            try:
                with uproot.recreate(io.BytesIO()) as scratch:
                    scratch.mktree("t", {"b": array.type.content})
                    scratch["t"].extend({"b": ak.to_packed(array[:1])})
                self._known[key] = None
            except Exception as exc:  # the writer's own words say what it cannot write
                self._known[key] = " ".join(f"{type(exc).__name__}: {exc}".split())
        return self._known[key]


def prepare(arrays: ak.Array, writability: Writability) -> Columns:
    """The branches of ``arrays`` (records of one stream) as the writer takes them.

    Args:
        arrays (awkward.Array): records of one stream, as ``next_batch`` returns them.
        writability (Writability): the cache of what the writer can write.
    """
    arrays = ak.to_packed(arrays)  # a selected slice is indexed; the writer wants plain buffers
    flat: dict[str, ak.Array] = {}
    for name in arrays.fields:
        _flatten(name, arrays[name], flat)
    types = {k: str(v.type.content) for k, v in flat.items()}  # once per branch: a type's text is not cheap
    skipped: dict[str, str] = {}
    for name in list(flat):
        why = writability.why_not(flat[name], types[name])
        if why is not None:
            skipped[name] = f"uproot's TTree writer cannot write {types[name]}: {why}"
            del flat[name]
    for name in list(flat):
        counter = "n" + name
        if name in flat and counter in flat and _is_jagged(flat[name]):
            counts = np.asarray(ak.num(flat[name], axis=1))
            if ak.to_layout(flat[counter]).is_numpy and np.array_equal(np.asarray(flat[counter]), counts):
                del flat[counter]  # the writer writes this counter itself
            else:
                skipped[counter] = f"its name is the counter the writer makes for {name!r}, with other values"
                del flat[counter]
    return Columns(flat, {k: types[k] for k in flat}, skipped)
