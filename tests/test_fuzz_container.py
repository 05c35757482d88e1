"""Property-based fuzzing of the .lfq parser: damaged input only ever raises FormatError, quickly,
without large allocations."""

import io
import struct
import time
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_container import CUT_FRAMES, MODEL, NET_MODEL, _file

from lfqcodec.format.container import MAGIC, LfqReader
from lfqcodec.base.errors import FormatError, ModelError

VALID = _file()
VALID_V2 = _file(frames=CUT_FRAMES, layout="2.0-update")  # context-coded chunks and decoder updates
VALID_V21 = _file(frames=CUT_FRAMES, layout="2.1")  # chunks coded with the residual network (coder 2)
MAX_BYTES = 32 << 20  # far above what a file of this size needs, far below a hostile header's claims


def _parse(data: bytes, salvage: bool = False, model=MODEL) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        reader = LfqReader(io.BytesIO(data), salvage=salvage, entropy_model=model)
        for i in range(len(reader.chunks)):
            reader.read_chunk(i)
            reader.update_for_chunk(reader.chunks[i].index)
    except (FormatError, ModelError):
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
@given(st.sampled_from(["2.0", "2.1"]), st.data(), st.booleans())
def test_random_byte_changes_v2_and_salvage(layout, data, salvage):
    """2.0 (context-coded chunks and decoder updates) and 2.1 (coder-2 chunks)."""
    valid, model = {"2.0": (VALID_V2, MODEL), "2.1": (VALID_V21, NET_MODEL)}[layout]
    changes = data.draw(st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), min_size=1, max_size=8))
    damaged = bytearray(valid)
    for position, value in changes:
        damaged[position] = value
    _parse(bytes(damaged), salvage, model)


@fuzz
@given(st.integers(0, len(VALID)), st.binary(max_size=64), st.booleans(), st.booleans())
def test_truncation_and_garbage_tail(cut, tail, v2, salvage):
    """Also the salvage scanner, on every layout."""
    valid = VALID_V2 if v2 else VALID
    _parse(valid[: cut % (len(valid) + 1)] + tail, salvage)


@fuzz
@given(st.binary(min_size=0, max_size=400))
def test_random_bytes_after_magic(body):
    _parse(MAGIC + body)


@fuzz
@given(
    st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1), st.integers(0, 2**32 - 1),
    st.integers(1, 2**32 - 1), st.integers(0, 2**16 - 1), st.booleans(), st.booleans(),
)  # fmt: skip
def test_hostile_header_values_are_bounded(width, height, frames, gop, bits, v2, salvage):
    """A header with a valid checksum but absurd sizes is rejected before anything is allocated."""
    import zlib

    data = bytearray(VALID_V2 if v2 else VALID)
    struct.pack_into("<III", data, 36, width, height, frames)
    struct.pack_into("<I", data, 72, gop)
    struct.pack_into("<H", data, 64, bits)
    (size,) = struct.unpack_from("<I", data, 12)
    struct.pack_into("<I", data, size - 4, zlib.crc32(bytes(data[: size - 4])))
    _parse(bytes(data), salvage)


@fuzz
@given(st.integers(1, 16384), st.integers(1, 16384), st.integers(0, 2**31 - 1), st.integers(0, 1024),
       st.sampled_from([1, 2, 4, 8]), st.sampled_from([8, 16]), st.integers(1, 62), st.booleans())  # fmt: skip
def test_hostile_but_valid_headers_from_the_spec(width, height, frames, k, tf, sf, bits, v2):
    """Headers that pass every check of FORMAT.md (within the limits), on a file with no chunk data
    or with the valid file's body: parsing and salvage stay fast and small whatever they claim."""
    from dataclasses import replace

    from lfqcodec.format.container import StreamHeader, validate_header
    from lfqcodec.base.errors import FormatError as Error
    from lfqcodec.format.header import encode_header

    gop = 1 + tf * k
    grid = (-(-height // sf), -(-width // sf))
    header = StreamHeader(bytes(16), width, height, frames, 1, 1, bits, 62, tf, sf, gop, *grid,
                          chunk_count=-(-frames // gop), version=(2, 0) if v2 else (1, 1), coder=int(v2))  # fmt: skip
    try:
        validate_header(header)
    except Error:
        return  # outside the limits: covered above
    head = encode_header(header)
    for body in (b"", (VALID_V2 if v2 else VALID)[len(head):]):
        _parse(head + body, salvage=True)
        _parse(head + body)
    assert replace(header).width == width


def test_reader_rejects_zstd_bomb():
    """A well-formed file whose chunk payload is a zstd bomb (declares 64 MiB) is refused unread."""
    import pytest
    import zstandard
    from test_container import FRAMES, HEADER, _chunks

    from lfqcodec.format.container import LfqWriter

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
