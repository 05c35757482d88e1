"""Property-based fuzzing of the .lfq parser: damaged input only ever raises FormatError, quickly,
without large allocations."""

import io
import struct
import time
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_container import _file

from lfqcodec.container import MAGIC, LfqReader
from lfqcodec.errors import FormatError

VALID = _file()
MAX_BYTES = 32 << 20  # far above what a file of this size needs, far below a hostile header's claims


def _parse(data: bytes) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        reader = LfqReader(io.BytesIO(data))
        for i in range(len(reader.chunks)):
            reader.read_chunk(i)
    except FormatError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - started < 2.0
    assert peak < MAX_BYTES


fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_random_byte_changes(changes):
    data = bytearray(VALID)
    for position, value in changes:
        data[position] = value
    _parse(bytes(data))


@fuzz
@given(st.integers(0, len(VALID)), st.binary(max_size=64))
def test_truncation_and_garbage_tail(cut, tail):
    _parse(VALID[:cut] + tail)


@fuzz
@given(st.binary(min_size=0, max_size=400))
def test_random_bytes_after_magic(body):
    _parse(MAGIC + body)


@fuzz
@given(
    st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(1, 2**32 - 1), st.integers(0, 2**16 - 1),
)  # fmt: skip
def test_hostile_header_values_are_bounded(width, height, frames, gop, bits):
    """A header with a valid checksum but absurd sizes is rejected before anything is allocated."""
    import zlib

    data = bytearray(VALID)
    struct.pack_into("<III", data, 36, width, height, frames)
    struct.pack_into("<I", data, 72, gop)
    struct.pack_into("<H", data, 64, bits)
    (size,) = struct.unpack_from("<I", data, 12)
    struct.pack_into("<I", data, size - 4, zlib.crc32(bytes(data[: size - 4])))
    _parse(bytes(data))


def test_reader_rejects_zstd_bomb():
    """A well-formed file whose chunk payload is a zstd bomb (declares 64 MiB) is refused unread."""
    import pytest
    import zstandard
    from test_container import FRAMES, HEADER, _chunks

    from lfqcodec.container import LfqWriter

    bomb = zstandard.ZstdCompressor().compress(b"\0" * (64 << 20))
    buffer = io.BytesIO()
    writer = LfqWriter(buffer, HEADER)
    writer.compressor = type("Bomb", (), {"compress": staticmethod(lambda packed: bomb)})()
    for bits, n in zip(_chunks(), FRAMES):
        writer.write_chunk(bits, n)
    writer.close()
    reader = LfqReader(io.BytesIO(buffer.getvalue()))
    tracemalloc.start()
    with pytest.raises(FormatError, match="declares the wrong size"):
        reader.read_chunk(0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20
