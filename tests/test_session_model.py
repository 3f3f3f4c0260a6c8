"""The session in-process against a model: request sequences, rewinds, reply sizes, empty files.

Real small ROOT files, fake time (see test_session_inprocess.py). The model of
keep-up ``all`` with one stream is a list of every passing record in file and
entry order and an index into it: ``next`` serves the record ``advance_by - 1``
further on and sends ahead the rest of that file (up to ``prefetch``); a rewind
right after it moves the index back to just after the last used one; a batch
serves from the index within the file; ``go_to_file`` moves the index to the
file's first record.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import uproot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_file
from dispatcher import reader, tail
from dispatcher.catalog import Catalog
from dispatcher.clock import FakeClock
from dispatcher.layouts import OrderLayout
from dispatcher.protocol import MessageType
from dispatcher.session import Session, SessionError
from dispatcher.subscription import Subscription
from test_session_inprocess import closed, sets_of

FILES = ("F00000001_0000.mdaq.root", "F00000001_0001.mdaq.root", "F00000001_0002.mdaq.root")
SIZES = (7, 1, 12)
POLL = 0.01


@pytest.fixture(scope="module")
def model_data(tmp_path_factory):
    """Three closed files; evt numbers the records across files; kind cycles 0..3."""
    d = tmp_path_factory.mktemp("model") / "data"
    d.mkdir()
    first = 0
    for name, n in zip(FILES, SIZES):
        evt = np.arange(first, first + n, dtype=np.int64)
        write_file(d / name, {"DaqSnarl": {"evt": evt, "kind": (evt % 4).astype(np.int32)}}, steps=2)
        closed(d / name)
        first += n
    return d


def make_session(data, clock=None):
    clock = clock or FakeClock(start=1000.0)
    return Session(Catalog(str(data)), clock, poll_interval=POLL, clock=clock)


def sub(**kw) -> Subscription:
    return Subscription(**{"streams": ["DaqSnarl"], "keep_up": "all", "start": "oldest", **kw})


REQUESTS = st.lists(st.one_of(
    st.tuples(st.just("next"), st.integers(1, 25), st.integers(1, 9)),
    st.tuples(st.just("rewind"), st.integers(0, 9)),
    st.tuples(st.just("batch"), st.integers(1, 9)),
    st.tuples(st.just("go"), st.sampled_from(FILES)),
    st.tuples(st.just("resubscribe"),),
), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=REQUESTS, cut=st.sampled_from([None, "kind != 3"]))
def test_request_sequences_agree_with_a_model(model_data, requests, cut):
    records = []  # (file, evt) of every passing record, in order
    first = 0
    for name, n in zip(FILES, SIZES):
        records += [(name, e) for e in range(first, first + n) if cut is None or e % 4 != 3]
        first += n
    at = 0  # the model's position: index of the next record to serve
    last_reply = None  # (index of its first record, how many): what a rewind may give back
    s = make_session(model_data)
    try:
        s.subscribe(sub(selection=cut))
        for request in requests:
            kind = request[0]
            if kind == "next":
                _, advance_by, prefetch = request
                want = at + advance_by - 1
                try:
                    parts, layout = s.next(1.0, advance_by=advance_by, prefetch=prefetch)
                except SessionError as exc:
                    assert exc.message_type is MessageType.TIMEOUT and want >= len(records), request
                    at, last_reply = len(records), None  # what was skipped stays skipped
                    continue
                assert isinstance(layout, OrderLayout)
                got = [(r["DaqSnarl"][0], r["DaqSnarl"][2]) for r in sets_of(parts, layout)]
                same_file = [r for r in records[want:] if r[0] == records[want][0]]
                assert got == same_file[:prefetch], request
                at, last_reply = want + len(got), (want, len(got))
            elif kind == "rewind":
                used = request[1]
                file = records[last_reply[0]][0] if last_reply else FILES[0]
                if last_reply is None or used > last_reply[1]:
                    with pytest.raises(SessionError) as err:
                        s.rewind(file, {"DaqSnarl": used})
                    assert err.value.message_type is MessageType.BAD_SUBSCRIPTION
                else:
                    s.rewind(file, {"DaqSnarl": used})
                    at = last_reply[0] + used
                last_reply = None
            elif kind == "batch":
                try:
                    parts, _ = s.next_batch(request[1], 1.0)
                except SessionError as exc:
                    assert exc.message_type is MessageType.TIMEOUT and at >= len(records)
                else:
                    got = [(parts[0].file, int(e)) for e in parts[0].arrays["evt"]]
                    same_file = [r for r in records[at:] if r[0] == records[at][0]]
                    assert got == same_file[: request[1]], request
                    at += len(got)
                last_reply = None
            elif kind == "go":
                s.go_to_file(request[1])
                at = next((i for i, r in enumerate(records) if r[0] >= request[1]), len(records))
                last_reply = None
            else:
                s.subscribe(sub(selection=cut))
                last_reply = None
    finally:
        s.close()


# ------------------------------------------------------------------ rewinds act only on the reply they answer


def test_rewind_after_a_batch_or_a_move_is_refused_and_serves_nothing_twice(model_data):
    s = make_session(model_data)
    try:
        s.subscribe(sub())
        parts, layout = s.next(1.0, prefetch=5)
        assert [r["DaqSnarl"][2] for r in sets_of(parts, layout)] == [0, 1, 2, 3, 4]
        batch, _ = s.next_batch(2, 1.0)
        assert batch[0].arrays["evt"].tolist() == [5, 6]
        with pytest.raises(SessionError) as err:  # stale: it would serve 1..6 again
            s.rewind(FILES[0], {"DaqSnarl": 1})
        assert err.value.message_type is MessageType.BAD_SUBSCRIPTION
        s.next(1.0, prefetch=1)
        s.go_to_file(FILES[2])
        with pytest.raises(SessionError):  # stale: it would start the new file mid-way
            s.rewind(FILES[1], {"DaqSnarl": 0})
        assert sets_of(*s.next(1.0))[0]["DaqSnarl"][1] == 0
        parts, layout = s.next(1.0, prefetch=2)
        for consumed in ({"DaqSnarl": 3}, {"DaqSnarl": -1}, {"Other": 0}, {"DaqSnarl": True}):
            with pytest.raises(SessionError):
                s.rewind(FILES[2], consumed)
            parts, layout = s.next(1.0, prefetch=2)
        s.rewind(FILES[2], {"DaqSnarl": 1})
        with pytest.raises(SessionError):  # one rewind per reply
            s.rewind(FILES[2], {"DaqSnarl": 0})
    finally:
        s.close()


# ------------------------------------------------------------------ replies bounded in bytes


def wide_file(path, n: int, width: int) -> None:
    with uproot.recreate(path) as f:
        for stream in ("A", "B"):
            f.mktree(stream, {"evt": np.int64, "blob": np.dtype((np.float64, (width,)))})
            for first in range(0, n, 10):
                f[stream].extend({"evt": np.arange(first, first + 10), "blob": np.zeros((10, width))})
    closed(path)


@pytest.mark.parametrize("how", ["batch", "prefetch", "sync_batch"])
def test_replies_stay_within_the_byte_limit_and_lose_nothing(tmp_path, monkeypatch, how):
    monkeypatch.setattr(reader, "MAX_REPLY_BYTES", 64 * 1024)
    data = tmp_path / "data"
    data.mkdir()
    wide_file(data / FILES[0], 40, 1024)  # 8 KiB records: 8 fit in a reply
    s = make_session(data)
    seen: dict[str, list[int]] = {"A": [], "B": []}
    try:
        s.subscribe(sub(streams=["A", "B"], sync="evt" if how == "sync_batch" else None))
        for _ in range(40):
            try:
                if how == "prefetch":
                    parts, _ = s.next(1.0, prefetch=1000)
                else:
                    parts, _ = s.next_batch(1000, 1.0)
            except SessionError as exc:
                assert exc.message_type is MessageType.TIMEOUT
                break
            size = sum(ak_nbytes(p) for p in parts)
            assert 0 < size <= 64 * 1024
            for p in parts:
                seen[p.stream] += p.entries.tolist()
    finally:
        s.close()
    assert seen == {"A": list(range(40)), "B": list(range(40))}


def ak_nbytes(part) -> int:
    import awkward as ak

    return ak.to_packed(part.arrays).nbytes + 8 * len(part.entries)


# ------------------------------------------------------------------ files with no readable stream


def test_closed_files_with_no_readable_stream_are_named_once_and_skipped(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    (data / FILES[0]).write_bytes(b"")  # zero bytes
    (data / FILES[1]).write_bytes(b"root" + bytes(2000))  # zeros after the magic: uproot opens it, empty
    with uproot.recreate(data / "F00000001_0001a.mdaq.root"):
        pass  # a real ROOT file with nothing in it
    write_file(data / FILES[2], {"DaqSnarl": {"evt": np.arange(3)}})
    for name in (FILES[0], FILES[1], "F00000001_0001a.mdaq.root", FILES[2]):
        closed(data / name)
    write_file(data / "F00000001_0003.mdaq.root", {"DaqSnarl": {"evt": np.arange(3, 5)}})
    caplog.set_level(logging.WARNING, logger="dds")
    for _ in range(2):  # a second session in the same process: no second warning
        s = make_session(data)
        try:
            s.subscribe(sub())
            parts, layout = s.next(1.0, prefetch=10)
            assert [r["DaqSnarl"] for r in sets_of(parts, layout)] == [(FILES[2], i, i) for i in range(3)]
        finally:
            s.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for bad in (FILES[0], FILES[1], "F00000001_0001a.mdaq.root"):
        assert sum(bad in w for w in warnings) == 1, warnings
    assert not any(FILES[2] in w for w in warnings)


def test_an_empty_open_file_is_waited_for_without_a_warning(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir()
    path = data / FILES[0]
    path.write_bytes(b"")  # the DAQ created it and has not written yet
    clock = FakeClock(start=1000.0)
    s = make_session(data, clock)
    caplog.set_level(logging.WARNING, logger="dds")
    try:
        s.subscribe(sub())
        with pytest.raises(SessionError) as err:
            s.next(30.0)  # ~1000 polls of an empty open file
        assert err.value.message_type is MessageType.TIMEOUT
        clock.call_later(0.5, write_file, path, {"DaqSnarl": {"evt": np.arange(4)}})
        parts, layout = s.next(5.0, prefetch=10)
        assert [r["DaqSnarl"][2] for r in sets_of(parts, layout)] == [0, 1, 2, 3]
    finally:
        s.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ------------------------------------------------------------------ many streams no file has


def test_subscribing_to_many_unknown_streams_opens_each_recent_file_once(model_data, monkeypatch):
    opened = []
    real = tail.FileReader._open_once

    def counting(self, strict=True):
        opened.append(self.name)
        return real(self, strict)

    monkeypatch.setattr(tail.FileReader, "_open_once", counting)
    s = make_session(model_data)
    try:
        s.subscribe(sub())
        s.next(1.0)
        opened.clear()
        s.subscribe(sub(streams=[f"Nope{i}" for i in range(64)]))
        assert len(opened) <= 3, opened
    finally:
        s.close()
