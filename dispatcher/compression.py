"""Compressed record data on the wire: zstd or lz4, agreed at the handshake.

A client names a codec in its hello; the doorway admits it only when this
server can use that codec (the package is installed and ``--compression``
allows it), and the welcome names the codec agreed. From then on the child
compresses the body of every data message (the column buffers, as one stream,
without joining them first) and says so in the header:
``"compression": "zstd", "raw_size": N``. A body too small to gain, or one that
did not shrink, goes as it is, without those keys. The client decompresses into
at most ``raw_size`` bytes (itself bounded by the frame limit), so a peer cannot
make it allocate more than a plain frame could.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from .protocol import SERVER_MAX_BODY, Data, RemoteProtocolError

__all__ = ["CODECS", "available", "compress_data", "decompress_data"]

#: every codec the protocol knows, and the package that provides it
CODECS = {"zstd": "zstandard", "lz4": "lz4"}
#: bodies smaller than this go uncompressed: too little to gain for the time spent
MIN_SIZE = 1024
#: zstd level: 1 is fast enough to keep up with a loopback link; higher levels gain little on column data
ZSTD_LEVEL = 1


def _module(codec: str) -> Any:
    return importlib.import_module("lz4.frame" if codec == "lz4" else CODECS[codec])


@functools.cache
def _installed(codec: str) -> bool:
    """Whether the package of ``codec`` imports (looked for once per process, not per handshake)."""
    try:
        _module(codec)
    except ImportError:
        return False
    return True


def available(allowed=None) -> tuple[str, ...]:
    """The codecs this process can use, of ``allowed`` (default: every codec)."""
    return tuple(c for c in (CODECS if allowed is None else allowed) if c in CODECS and _installed(c))


def compress_data(msg: Data, codec: str) -> Data:
    """``msg`` with its body compressed with ``codec`` ("" : unchanged)."""
    if not codec:
        return msg
    chunks = msg.body if isinstance(msg.body, list) else [msg.body]
    views = [memoryview(c).cast("B") for c in chunks]
    raw = sum(v.nbytes for v in views)
    if raw < MIN_SIZE:
        return msg
    mod = _module(codec)
    if codec == "zstd":
        c = mod.ZstdCompressor(level=ZSTD_LEVEL).compressobj(size=raw)
        out = [c.compress(v) for v in views]
        out.append(c.flush())
    else:
        lz = mod.LZ4FrameCompressor(content_checksum=False)
        out = [lz.begin(raw)]
        out.extend(lz.compress(v) for v in views)
        out.append(lz.flush())
    packed = [b for b in out if b]
    if sum(len(b) for b in packed) >= raw:
        return msg
    return Data(header=dict(msg.header, compression=codec, raw_size=raw), body=packed)


def decompress_data(msg: Data) -> Data:
    """``msg`` with its body as sent before compression (unchanged when it was not compressed).

    Raises:
        RemoteProtocolError: an unknown codec, a size out of bounds, or a body that does not decompress to it.
    """
    codec = msg.header.get("compression")
    if codec is None:
        return msg
    raw = msg.header.get("raw_size")
    if codec not in CODECS:
        raise RemoteProtocolError(f"record data compressed with unknown codec {codec!r}")
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= SERVER_MAX_BODY:
        raise RemoteProtocolError(f"record data with raw_size {raw!r} (limit {SERVER_MAX_BODY})")
    try:
        mod = _module(codec)
        if codec == "zstd":
            declared = mod.frame_content_size(msg.body)
            if declared != raw:  # checked first: decompress() allocates what the frame declares
                raise ValueError(f"frame declares {declared} bytes")
            body = mod.ZstdDecompressor().decompress(msg.body)
        else:
            lz = mod.LZ4FrameDecompressor()
            body = lz.decompress(msg.body, max_length=raw)
            if not lz.eof:
                raise ValueError("truncated lz4 frame")
    except ImportError:
        raise RemoteProtocolError(f"record data compressed with {codec!r}, which this client cannot read "
                                  f"(pip install {CODECS[codec]})") from None
    except Exception as exc:  # each codec raises its own error class for corrupt input
        raise RemoteProtocolError(f"record data does not decompress with {codec}: {exc}") from None
    if len(body) != raw:
        raise RemoteProtocolError(f"record data decompressed to {len(body)} bytes, not the {raw} announced")
    header = {k: v for k, v in msg.header.items() if k not in ("compression", "raw_size")}
    return Data(header=header, body=memoryview(body))
