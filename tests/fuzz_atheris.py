"""Coverage-guided fuzzing of the DDS parsers with atheris (libFuzzer), by hand; not part of the test suite.

    .venv/bin/pip install -e '.[fuzz]'
    .venv/bin/python tests/fuzz_atheris.py server -max_total_time=60
    .venv/bin/python tests/fuzz_atheris.py client -runs=200000
    .venv/bin/python tests/fuzz_atheris.py subscription -max_total_time=60
    .venv/bin/python tests/fuzz_atheris.py records -max_total_time=60

Targets: ``server``/``client``: a ``Connection`` of that role fed the input in
chunks (the first bytes choose the split points); ``subscription``: JSON-like values built
from the input into ``subscription.from_dict``; ``records``: the input as a data
message into ``columnar.decode_parts``. A target fails (and libFuzzer saves the
input) when anything but the documented error escapes, or the decoder buffers
more than one frame's limit plus the chunk just fed. Other arguments go to
libFuzzer (a corpus directory, ``-runs``, ``-max_total_time``...).
"""

from __future__ import annotations

import json
import sys

try:
    import atheris
except ImportError:
    sys.exit("atheris is not installed: .venv/bin/pip install -e '.[fuzz]'")

with atheris.instrument_imports():
    from dispatcher import protocol
    from dispatcher.columnar import decode_parts
    from dispatcher.subscription import SubscriptionError, from_dict

LIMITS = {"server": (protocol.CLIENT_MAX_HEADER, protocol.CLIENT_MAX_BODY),
          "client": (protocol.SERVER_MAX_HEADER, protocol.SERVER_MAX_BODY)}


def _connection(role: str, data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = sorted(fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 6)))
    stream = fdp.ConsumeBytes(fdp.remaining_bytes())
    conn = protocol.Connection(role)
    if role == "client":
        conn.send(protocol.Hello(protocol.PROTOCOL_VERSION, "fuzz"))
    max_header, max_body = LIMITS[role]
    edges = sorted({0, len(stream), *(min(c, len(stream)) for c in cuts)})
    try:
        for a, b in zip(edges[:-1], edges[1:]):
            conn.receive_data(stream[a:b])
            if len(conn._decoder._buf) > protocol.PREFIX.size + max_header + max_body + (b - a):
                raise AssertionError("decoder buffers more than a frame's limit")
            while (msg := conn.next_message()) is not None:
                if isinstance(msg, protocol.Data):
                    try:
                        decode_parts(msg)
                    except protocol.ProtocolError:
                        pass
                if role == "server":
                    conn.send(protocol.Ok({}))
                elif conn.state == "IDLE":
                    conn.send(protocol.Next(1.0))
    except protocol.ProtocolError:
        pass


_FIELDS = ["streams", "keep_up", "selection", "branches", "start", "prescale", "sync", "max_sync_delay"]
_WORDS = ["DaqSnarl", "DaqMonitor", "all", "file", "record", "FileKeepUp", "oldest", "latest", "current", "evt", ""]


def _value(fdp, depth: int = 0):
    """A JSON-like value steered by the input: the fuzzer learns which shapes go deeper."""
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 160))
    if kind == 3:
        return fdp.ConsumeFloat()
    if kind == 4:
        return _WORDS[fdp.ConsumeIntInRange(0, len(_WORDS) - 1)]
    if kind == 5:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 300))
    if kind in (6, 7):
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {_value_key(fdp): _value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))}


def _value_key(fdp) -> str:
    return _WORDS[fdp.ConsumeIntInRange(0, len(_WORDS) - 1)] if fdp.ConsumeBool() else fdp.ConsumeUnicode(6)


def _subscription(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeIntInRange(0, 9) == 0:
        value = _value(fdp)
    else:
        value = {}
        for _ in range(fdp.ConsumeIntInRange(0, 9)):
            key = _FIELDS[fdp.ConsumeIntInRange(0, len(_FIELDS) - 1)] if fdp.ConsumeIntInRange(0, 9) else "x"
            value[key] = _value(fdp)
    try:
        sub = from_dict(value)
    except SubscriptionError:
        return
    if from_dict(json.loads(json.dumps(sub.to_dict(), allow_nan=False))) != sub:
        raise AssertionError("subscription does not survive the wire")


def _records(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 2048))
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):
        return
    if not isinstance(header, dict):
        header = {"parts": header}
    try:
        decode_parts(protocol.Data(header=header, body=memoryview(body)))
    except protocol.ProtocolError:
        pass


TARGETS = {
    "server": lambda data: _connection("server", data),
    "client": lambda data: _connection("client", data),
    "subscription": _subscription,
    "records": _records,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
