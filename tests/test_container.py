import hashlib
import io
import struct
import zlib
from fractions import Fraction

import numpy as np
import pytest

from lfqcodec.container import LfqReader, LfqWriter, StreamHeader
from lfqcodec.errors import FormatError

HEADER = StreamHeader(
    model_id=bytes(range(16)), width=100, height=50, frame_count=0, fps=Fraction(30000, 1001),
    time_base=Fraction(1, 30000), bits=6, model_bits=12, temporal_factor=4, spatial_factor=8, gop=9,
    grid_height=7, grid_width=13, metadata={"model_name": "golden", "quality": "medium"},
)  # fmt: skip
FRAMES = [9, 9, 3]
CUT_FRAMES = [9, 6, 9, 1, 2]  # chunks ended early at scene cuts (FLAG_CUT_CHUNKS)


def _chunks(seed: int = 0, frames=FRAMES) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((6, HEADER.latent_frames(n), 7, 13)) > 0.3 for n in frames]


def _file(chunks=None, level: int = 3, frames=FRAMES) -> bytes:
    buf = io.BytesIO()
    writer = LfqWriter(buf, HEADER, zstd_level=level)
    for bits, n in zip(chunks or _chunks(frames=frames), frames):
        writer.write_chunk(bits, n)
    writer.close()
    return buf.getvalue()


@pytest.mark.parametrize("frames, golden", [(FRAMES, "GOLDEN_SHA256"), (CUT_FRAMES, "GOLDEN_CUT_SHA256")])
def test_golden_bytes(frames, golden):
    """Pins the format: if this hash changes, the bitstream changed (bump the version and the spec)."""
    data = _file(frames=frames)
    assert data[:8] == b"\x89LFQ\r\n\x1a\n"
    assert hashlib.sha256(data).hexdigest() == globals()[golden]


def test_cut_chunks_set_the_flag_and_read_back():
    assert not LfqReader(io.BytesIO(_file())).header.cut_chunks  # only the last chunk is short
    chunks = _chunks(2, CUT_FRAMES)
    reader = LfqReader(io.BytesIO(_file(chunks, frames=CUT_FRAMES)))
    assert reader.header.cut_chunks and reader.version == "1.1"
    assert reader.header.frame_count == 27 and reader.header.chunk_count == 5
    assert [(c.first_frame, c.frame_count) for c in reader.chunks] == [(0, 9), (9, 6), (15, 9), (24, 1), (25, 2)]
    for i, bits in enumerate(chunks):
        assert np.array_equal(reader.read_chunk(i), bits)
    assert [c.first_frame for c in reader.chunks_for_frames(14, 11)] == [9, 15, 24]


def _with_minor_version(data: bytes, minor: int) -> bytes:
    """``data`` relabelled as another 1.x minor version (header checksum recomputed)."""
    size = struct.unpack_from("<I", data, 12)[0]
    body = bytearray(data[: size - 4])
    struct.pack_into("<H", body, 10, minor)
    return bytes(body) + struct.pack("<I", zlib.crc32(body)) + data[size:]


def test_version_1_0_files_still_read():
    chunks = _chunks(3)
    reader = LfqReader(io.BytesIO(_with_minor_version(_file(chunks), 0)))
    assert reader.version == "1.0"
    assert all(np.array_equal(reader.read_chunk(i), bits) for i, bits in enumerate(chunks))


def test_cut_layout_and_fixed_layout_checks():
    data = bytearray(_file(frames=CUT_FRAMES))
    size = struct.unpack_from("<I", data, 12)[0]
    struct.pack_into("<I", data, 16, 0)  # clear the flag: the chunk count no longer fits
    struct.pack_into("<I", data, size - 4, zlib.crc32(data[: size - 4]))
    with pytest.raises(FormatError, match="chunk count"):
        LfqReader(io.BytesIO(bytes(data)))


def test_roundtrip_tokens_exact():
    chunks = _chunks(1)
    reader = LfqReader(io.BytesIO(_file(chunks)))
    assert reader.header.frame_count == 21 and reader.header.chunk_count == 3
    assert reader.header.fps == Fraction(30000, 1001) and reader.header.metadata["quality"] == "medium"
    for i, bits in enumerate(chunks):
        assert np.array_equal(reader.read_chunk(i), bits)
    assert [c.first_frame for c in reader.chunks_for_frames(10, 9)] == [9, 18]


def _read_all(data: bytes) -> None:
    reader = LfqReader(io.BytesIO(data))
    for i in range(len(reader.chunks)):
        reader.read_chunk(i)


@pytest.mark.parametrize("frames", [FRAMES, CUT_FRAMES])
def test_every_truncation_is_rejected(frames):
    data = _file(frames=frames)
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            _read_all(data[:cut])


@pytest.mark.parametrize("frames", [FRAMES, CUT_FRAMES])
def test_every_single_byte_corruption_is_detected(frames):
    data = _file(frames=frames)
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x10
        with pytest.raises(FormatError):
            _read_all(bytes(damaged))


def test_clear_messages():
    data = _file()
    with pytest.raises(FormatError, match="bad magic"):
        LfqReader(io.BytesIO(b"hello world, this is not an lfq file at all" * 4))
    future = bytearray(data)
    future[8] = 2
    with pytest.raises(FormatError, match="unsupported .lfq version 2"):
        LfqReader(io.BytesIO(bytes(future)))
    with pytest.raises(FormatError, match="truncated"):
        LfqReader(io.BytesIO(data[:-40]))


GOLDEN_SHA256 = "2a51f95af0454d052469232cb43cfaeb81e30ed6853835719ff3162c6da6ac52"
GOLDEN_CUT_SHA256 = "8002dad55e8c9f2c42e33c854e3782e1400ab0cec261201770e7ae15af548c30"
