"""Record data on the wire: awkward arrays as self-describing column buffers.

A *part* is one stream's records from one file: the awkward form (JSON), the
length, the entry numbers (int64) and the packed column buffers. A data message
holds parts and a reply layout (``layouts``) saying how they make record sets.
``ak.to_buffers``/``ak.from_buffers`` do the work; buffers travel without a copy
on the way out and are viewed in place (``numpy.frombuffer``) on the way in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import numpy as np

from .layouts import Layout
from .protocol import MAX_BATCH, Data, RemoteProtocolError


@dataclass
class Part:
    stream: str
    file: str
    entries: np.ndarray  # int64
    arrays: ak.Array  # records, one per entry
    unserved: dict[str, str] = field(default_factory=dict)  # branch -> why the file's stream cannot serve it
    # freshness (see freshness.py), as the server knows it when it replies; None: not known
    lag: int | None = None  # records of the stream written after the part's last one
    age: list | None = None  # [[entry, seconds since first seen], ...], ascending entries
    skipped: int | None = None  # record mode: passing records skipped since the previous part
    redelivered: bool = False  # a group's records handed before to a member that ended without acknowledging


def _packed(arrays: ak.Array) -> ak.Array:
    """``ak.to_packed``, skipped for what is packed already: flat columns, as read or sliced (the bulk case)."""
    layout = arrays.layout
    if isinstance(layout, ak.contents.RecordArray) and all(
        isinstance(c, ak.contents.NumpyArray) and c.length == layout.length and c.data.ndim == 1
        and c.data.flags.c_contiguous for c in layout.contents
    ):
        return arrays
    return ak.to_packed(arrays)


def encode_parts(parts: list[Part], layout: Layout | None = None, *, ranges: bool = False) -> Data:
    """Build a :class:`Data` message.

    Args:
        parts (list of Part): the record data, in body order.
        layout (Layout or None): how the parts make record sets, sent as the header's ``info``;
            None for a plain batch of one part (see docs/PROTOCOL.md).
        ranges (bool): a part whose entries are consecutive sends its first entry (``entry_start``)
            instead of the int64 entry numbers (replies to ``stream_batches``: the clients that send it
            read both); default False.
    """
    descs: list[dict[str, Any]] = []
    chunks: list[memoryview] = []
    for p in parts:
        form, length, container = ak.to_buffers(_packed(p.arrays))
        entries = np.ascontiguousarray(p.entries, dtype=np.int64)
        # entries ascend strictly within a part: first and last tell whether they are consecutive
        as_range = ranges and len(entries) > 0 and int(entries[-1]) - int(entries[0]) == len(entries) - 1
        keys = list(container)
        bufs = [np.ascontiguousarray(container[k]) for k in keys]
        descs.append(
            {
                "stream": p.stream,
                "file": p.file,
                "length": int(length),
                "form": form.to_dict(),
                "keys": keys,
                "sizes": [int(b.nbytes) for b in bufs],
                **({"entry_start": int(entries[0])} if as_range else {}),
                **({"unserved": p.unserved} if p.unserved else {}),
                **({"lag": p.lag} if p.lag is not None else {}),
                **({"age": p.age} if p.age else {}),
                **({"skipped": p.skipped} if p.skipped is not None else {}),
                **({"redelivered": True} if p.redelivered else {}),
            }
        )
        if not as_range:
            chunks.append(entries.data.cast("B"))
        chunks.extend(b.data.cast("B") for b in bufs)
    header: dict[str, Any] = {"parts": descs}
    if layout is not None:
        header["info"] = layout.to_info()
    return Data(header=header, body=chunks)


def decode_parts(msg: Data) -> list[Part]:
    """The parts of a received :class:`Data` message (buffers viewed in place)."""
    body = msg.body
    pos = 0
    parts = []
    try:
        for d in msg.header["parts"]:
            length = int(d["length"])
            if "entry_start" in d:
                start = d["entry_start"]
                if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start < 2**62:
                    raise ValueError(f"entry_start must be a non-negative int, not {start!r}")
                if not 0 <= length <= MAX_BATCH:  # no body bounds it: a length must not allocate at will
                    raise ValueError(f"length {length} out of range for a part with entry_start")
                entries = np.arange(start, start + length, dtype=np.int64)
            else:
                entries = np.frombuffer(body[pos : pos + 8 * length], dtype=np.int64)
                pos += 8 * length
            container = {}
            for key, size in zip(d["keys"], d["sizes"]):
                container[key] = np.frombuffer(body[pos : pos + size], dtype=np.uint8)
                pos += size
            arrays = ak.from_buffers(ak.forms.from_dict(d["form"]), length, container)
            unserved = d.get("unserved", {})
            if not isinstance(unserved, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in unserved.items()
            ):
                raise ValueError("unserved must map branch names to reasons")
            redelivered = d.get("redelivered", False)
            if not isinstance(redelivered, bool):
                raise ValueError("redelivered must be true or false")
            parts.append(Part(d["stream"], d["file"], entries, arrays, dict(unserved), *_freshness(d), redelivered))
    except Exception as exc:  # awkward checks a form with assert, getattr, indexing...: any of them may fail
        raise RemoteProtocolError(f"malformed record data: {type(exc).__name__}: {exc}") from None
    if pos != len(body):
        raise RemoteProtocolError(f"record data has {len(body) - pos} unexplained bytes")
    return parts


def _count_or_none(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} must be a count")
    return value


def _freshness(d: dict) -> tuple[int | None, list | None, int | None]:
    """A part descriptor's ``lag``, ``age`` and ``skipped``, checked (absent: None)."""
    age = d.get("age")
    if age is not None:
        if not isinstance(age, list) or not all(
            isinstance(a, list) and len(a) == 2 and isinstance(a[0], int) and not isinstance(a[0], bool)
            and isinstance(a[1], (int, float)) and not isinstance(a[1], bool) and a[1] >= 0 for a in age
        ):
            raise ValueError("age must be a list of [entry, seconds]")
        age = [[a[0], float(a[1])] for a in age]
    return _count_or_none(d.get("lag"), "lag"), age, _count_or_none(d.get("skipped"), "skipped")
