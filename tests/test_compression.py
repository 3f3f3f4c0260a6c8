"""A compressed wire: zstd or lz4 agreed at the handshake, the same records as without."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from clients import DDSClient, DDSError, MessageType, Subscription
from conftest import snarl_data, write_file
from dispatcher.columnar import Part, decode_parts, encode_parts
from dispatcher.compression import MIN_SIZE, available, compress_data, decompress_data
from dispatcher.protocol import Data, RemoteProtocolError

CODECS = ["zstd", "lz4"]


def jagged_part(n: int = 2000) -> Part:
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 20, n)
    arrays = ak.zip({"evt": np.arange(n), "adc": ak.unflatten(rng.integers(0, 4096, counts.sum()), counts)},
                    depth_limit=1)
    return Part("DaqSnarl", "F.root", np.arange(n, dtype=np.int64), arrays)


def body_bytes(msg: Data) -> bytes:
    chunks = msg.body if isinstance(msg.body, list) else [msg.body]
    return b"".join(bytes(memoryview(c).cast("B")) for c in chunks)


def test_every_codec_is_installed():
    assert available() == ("zstd", "lz4")
    assert available(["lz4", "brotli"]) == ("lz4",)


@pytest.mark.parametrize("codec", CODECS)
def test_a_compressed_body_decompresses_to_the_same_bytes_and_records(codec):
    msg = encode_parts([jagged_part()])
    packed = compress_data(msg, codec)
    assert packed.header["compression"] == codec
    assert len(body_bytes(packed)) < packed.header["raw_size"] == len(body_bytes(msg))
    back = decompress_data(Data(packed.header, memoryview(body_bytes(packed))))
    assert "compression" not in back.header and bytes(back.body) == body_bytes(msg)
    assert decode_parts(back)[0].arrays.to_list() == jagged_part().arrays.to_list()


def test_a_small_body_goes_as_it_is():
    msg = encode_parts([jagged_part(3)])
    assert len(body_bytes(msg)) < MIN_SIZE and compress_data(msg, "zstd") is msg


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("lie", ["short", "long", "garbage", "huge"])
def test_a_body_that_does_not_decompress_to_what_it_announced_is_refused(codec, lie):
    packed = compress_data(encode_parts([jagged_part()]), codec)
    body, header = body_bytes(packed), dict(packed.header)
    if lie == "short":
        header["raw_size"] -= 1
    elif lie == "long":
        header["raw_size"] += 1
    elif lie == "garbage":
        body = body[:20] + bytes(len(body) - 20)
    else:
        header["raw_size"] = 1 << 40
    with pytest.raises(RemoteProtocolError):
        decompress_data(Data(header, memoryview(body)))


def test_an_unknown_codec_is_refused():
    with pytest.raises(RemoteProtocolError, match="unknown codec"):
        decompress_data(Data({"parts": [], "compression": "brotli", "raw_size": 0}, memoryview(b"")))


@pytest.fixture
def files(data_dir):
    rng = np.random.default_rng(3)
    for i in range(2):
        data = snarl_data(i * 3000, 3000)
        counts = rng.integers(0, 30, 3000)
        data["adc"] = ak.unflatten(rng.integers(0, 4096, counts.sum()).astype(np.int32), counts)
        write_file(data_dir / f"F0001_{i:04d}.root", {"DaqSnarl": data, "DaqMonitor": snarl_data(i * 10, 10)},
                   steps=3)
    return data_dir


def read_all(port: int, compression) -> tuple[list, list]:
    with DDSClient("127.0.0.1", port, compression=compression) as dds:
        dds.subscribe(Subscription(streams=["DaqSnarl", "DaqMonitor"], keep_up="all", start="oldest"))
        batches = []
        while len(batches) < 100:
            try:
                b = dds.next_batch(1000, timeout=0.5)
            except DDSError:
                break
            batches.append((b.stream, b.file, b.entries.tolist(), b.arrays.to_list()))
        dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all"))
        dds.go_to_file("F0001_0000.root")
        sets = [dds.next(timeout=5).records for _ in range(500)]
    return batches, sets


def test_records_are_identical_with_and_without_compression(files, server_factory):
    s = server_factory(files)
    plain = read_all(s.port, None)
    assert sum(len(b[2]) for b in plain[0]) == 6020
    for codec in CODECS:
        assert read_all(s.port, codec) == plain


def test_a_server_that_cannot_compress_says_so_and_a_list_skips_it(files, server_factory):
    lz4_only = server_factory(files, "--compression", "lz4")
    with pytest.raises(DDSError, match="cannot compress with 'zstd'; it can: lz4") as refused:
        DDSClient("127.0.0.1", lz4_only.port, compression="zstd")
    assert refused.value.message_type is MessageType.PROTOCOL_ERROR
    with DDSClient("127.0.0.1", lz4_only.port, compression="lz4") as dds:
        dds.subscribe(Subscription(streams=["DaqSnarl"], keep_up="all", start="oldest"))
        assert len(dds.next_batch(1000, timeout=5)) == 1000
    plain = server_factory(files, "--compression", "none")
    with DDSClient([f"127.0.0.1:{plain.port}", f"127.0.0.1:{lz4_only.port}"], compression="lz4") as dds:
        assert dds.port == lz4_only.port


def test_an_unknown_codec_is_refused_before_connecting():
    with pytest.raises(ValueError, match="compression must be one of 'zstd', 'lz4'"):
        DDSClient("127.0.0.1", 1, compression="gzip")


def test_over_a_throttled_link_compression_moves_fewer_bytes_in_less_time(files, server_factory):
    from bench.remote import Relay
    from bench.remote import read_all as read_through

    s = server_factory(files)
    rate = 1e6  # bytes/s: a slow remote link
    measured = {}
    for codec in (None, "zstd"):
        with Relay((s.host, s.port), rate) as relay:
            n, seconds = read_through(relay.port, codec)
            measured[codec] = (n, seconds, relay.down_bytes)
    (n0, t0, b0), (n1, t1, b1) = measured[None], measured["zstd"]
    assert n0 == n1 == 6000
    assert b1 < 0.8 * b0 and t0 >= 0.7 * b0 / rate  # the relay really holds the rate
    assert t1 < t0
