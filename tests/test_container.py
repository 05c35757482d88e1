import hashlib
import io
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


def _chunks(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((6, HEADER.latent_frames(n), 7, 13)) > 0.3 for n in FRAMES]


def _file(chunks=None, level: int = 3) -> bytes:
    buf = io.BytesIO()
    writer = LfqWriter(buf, HEADER, zstd_level=level)
    for bits, n in zip(chunks or _chunks(), FRAMES):
        writer.write_chunk(bits, n)
    writer.close()
    return buf.getvalue()


def test_golden_bytes():
    """Pins the format: if this hash changes, the bitstream changed (bump the version and the spec)."""
    data = _file()
    assert data[:8] == b"\x89LFQ\r\n\x1a\n"
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256


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


def test_every_truncation_is_rejected():
    data = _file()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            _read_all(data[:cut])


def test_every_single_byte_corruption_is_detected():
    data = _file()
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


GOLDEN_SHA256 = "ba8ef40750351121285dcbc881e350febb4b9bde14deba0a196e81f8bceb3991"
