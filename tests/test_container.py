import hashlib
import io
import struct
import zlib
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from lfqcodec.format.container import LfqReader, LfqWriter, StreamHeader
from lfqcodec.entropy.coder import CONTEXTS, FittedModel, sigmoid_table
from lfqcodec.entropy.net import ResidualNet
from lfqcodec.base.errors import FormatError

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


def entropy_model(bits: int = 6, seed: int = 0) -> FittedModel:
    """A fixed (not fitted) context model, seeded: a bit tends to repeat the previous latent
    frame's (P, context // 216), plus random integer terms."""
    rng = np.random.default_rng(seed)
    weights = np.tril(rng.integers(-100, 100, (bits, bits)), -1).astype(np.int32)
    p = np.arange(CONTEXTS) // 216
    table = np.where(p == 2, 0, np.where(p == 1, 900, -900)) + rng.integers(-300, 300, (bits, CONTEXTS))
    return FittedModel(table.astype(np.int32), weights, sigmoid_table(), bytes(range(16)), "test")


def net_model(bits: int = 6, seed: int = 0, hidden: int = 8) -> FittedModel:
    """:func:`entropy_model` with a fixed (not fitted), seeded residual network (coder 2) whose
    weights are well inside the exactness bounds."""
    rng = np.random.default_rng(seed + 100)
    ints = lambda low, high, shape, dtype: rng.integers(low, high, shape).astype(dtype)
    net = ResidualNet(w_prev=ints(-300, 300, (hidden, bits, 9), np.int16), w_cur=ints(-300, 300, (hidden, bits, 9), np.int16),
                      w_own=ints(-300, 300, (hidden, 4), np.int16), w_logit=ints(-40, 40, hidden, np.int32),
                      bias=ints(-2000, 2000, (bits, 2, 2, hidden), np.int32), out=ints(-60, 60, (bits, hidden), np.int16),
                      out_bias=ints(-500, 500, bits, np.int32), shifts=np.array([6, 7], np.int32))  # fmt: skip
    assert net.problems() is None
    return replace(entropy_model(bits, seed), net=net)


def _persistent_chunks(seed: int = 0, frames=FRAMES) -> list[np.ndarray]:
    """Bits that mostly repeat from one latent frame to the next (as video tokens do)."""
    rng = np.random.default_rng(seed)
    chunks = []
    for n in frames:
        bits = np.empty((6, HEADER.latent_frames(n), 7, 13), dtype=bool)
        bits[:, 0] = rng.random((6, 7, 13)) > 0.5
        for t in range(1, bits.shape[1]):
            bits[:, t] = bits[:, t - 1] ^ (rng.random((6, 7, 13)) < 0.05)
        chunks.append(bits)
    return chunks


MODEL = entropy_model()
# the layouts every parser test runs on: legacy 1.1, 2.0 with zstd chunks, 2.0 with the context
# model, 2.0 with decoder updates
NET_MODEL = net_model()
LAYOUTS = {"1.1": ((1, 1), None, False), "2.0-zstd": ((2, 0), None, False), "2.0": ((2, 0), MODEL, False),
           "2.0-update": ((2, 0), MODEL, True), "2.1": ((2, 0), NET_MODEL, False)}  # fmt: skip


def _file(chunks=None, level: int = 3, frames=FRAMES, layout: str = "1.1") -> bytes:
    version, model, updates = LAYOUTS[layout]
    buf = io.BytesIO()
    writer = LfqWriter(buf, HEADER, zstd_level=level, version=version, entropy_model=model)
    chunks = chunks or (_chunks(frames=frames) if version == (1, 1) else _persistent_chunks(frames=frames))
    for i, (bits, n) in enumerate(zip(chunks, frames)):
        if updates and i in (0, 2):
            writer.write_update(bytes([i]) * (5 + i), i, 1 if i == 0 else len(frames) - 2)
        writer.write_chunk(bits, n)
    writer.close()
    return buf.getvalue()


@pytest.mark.parametrize("frames, golden, layout", [
    (FRAMES, "GOLDEN_SHA256", "1.1"), (CUT_FRAMES, "GOLDEN_CUT_SHA256", "1.1"), (FRAMES, "GOLDEN_V2_SHA256", "2.0"),
    (CUT_FRAMES, "GOLDEN_V2_UPDATE_SHA256", "2.0-update"), (FRAMES, "GOLDEN_V2_ZSTD_SHA256", "2.0-zstd"),
    (FRAMES, "GOLDEN_V21_SHA256", "2.1"),
])  # fmt: skip
def test_golden_bytes(frames, golden, layout):
    """Pins the format: if this hash changes, the bitstream changed (bump the version and the spec).
    The 1.1 hashes are those of release 1873cc4: the legacy writer is byte for byte the same."""
    data = _file(frames=frames, layout=layout)
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


def _read_all(data: bytes, model: FittedModel = MODEL) -> None:
    reader = LfqReader(io.BytesIO(data), entropy_model=model)
    for i in range(len(reader.chunks)):
        reader.read_chunk(i)
        reader.update_for_chunk(reader.chunks[i].index)


PARSER_CASES = [(FRAMES, layout) for layout in LAYOUTS] + [(CUT_FRAMES, "1.1"), (CUT_FRAMES, "2.0-update")]


@pytest.mark.parametrize("frames, layout", PARSER_CASES)
def test_every_truncation_is_rejected(frames, layout):
    data = _file(frames=frames, layout=layout)
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            _read_all(data[:cut], LAYOUTS[layout][1] or MODEL)


@pytest.mark.parametrize("frames, layout", PARSER_CASES)
def test_every_single_byte_corruption_is_detected(frames, layout):
    data = _file(frames=frames, layout=layout)
    for pos in range(len(data)):
        damaged = bytearray(data)
        damaged[pos] ^= 0x10
        with pytest.raises(FormatError):
            _read_all(bytes(damaged), LAYOUTS[layout][1] or MODEL)


def test_clear_messages():
    data = _file()
    with pytest.raises(FormatError, match="bad magic"):
        LfqReader(io.BytesIO(b"hello world, this is not an lfq file at all" * 4))
    future = bytearray(data)
    future[8] = 3
    with pytest.raises(FormatError, match="unsupported .lfq version 3"):
        LfqReader(io.BytesIO(bytes(future)))
    with pytest.raises(FormatError, match="truncated"):
        LfqReader(io.BytesIO(data[:-40]))


GOLDEN_SHA256 = "2a51f95af0454d052469232cb43cfaeb81e30ed6853835719ff3162c6da6ac52"
GOLDEN_CUT_SHA256 = "8002dad55e8c9f2c42e33c854e3782e1400ab0cec261201770e7ae15af548c30"
GOLDEN_V2_SHA256 = "f2d92b709a12a3d7208b328f013fcc201908fdbdb7161aa7d5ac042778a7f10c"
GOLDEN_V2_UPDATE_SHA256 = "1ecc7a6e8d6bc2269f042d832b46088dc1051004af017019b16aabe46a77120f"
GOLDEN_V2_ZSTD_SHA256 = "b4123b4cbf200fdfacc40635cf4ec68d10c448639e4b83d3ea0a04c74e51628c"
GOLDEN_V21_SHA256 = "11c676e2d0771e1817dfb7c2c35051203797dcc3d201235795314482a0d29028"


@pytest.mark.parametrize("layout", ["2.0", "2.0-update", "2.0-zstd"])
def test_version_2_roundtrip_and_coders(layout):
    chunks = _persistent_chunks(4, CUT_FRAMES)
    reader = LfqReader(io.BytesIO(_file(chunks, frames=CUT_FRAMES, layout=layout)), entropy_model=MODEL)
    assert reader.version == "2.0" and reader.header.cut_chunks
    assert reader.header.entropy_id == (bytes(16) if layout == "2.0-zstd" else MODEL.model_id)
    for i, bits in enumerate(chunks):
        assert np.array_equal(reader.read_chunk(i), bits)
        frames = list(reader.iter_chunk(i))  # one latent frame at a time
        assert len(frames) == bits.shape[1] and np.array_equal(frames[0], bits[:, 0])
    coders = {c.coder for c in reader.chunks}
    assert coders == ({0} if layout == "2.0-zstd" else {0, 1})  # the one-latent-frame chunk stays zstd


def test_context_chunks_need_their_entropy_model():
    from lfqcodec.base.errors import ModelError

    reader = LfqReader(io.BytesIO(_file(frames=FRAMES, layout="2.0")))
    position = next(i for i, c in enumerate(reader.chunks) if c.coder == 1)
    with pytest.raises(ModelError, match="needs entropy model"):
        reader.read_chunk(position)
    with pytest.raises(ModelError, match="needs entropy model"):
        LfqReader(io.BytesIO(_file(frames=FRAMES, layout="2.0")), entropy_model=entropy_model(seed=1)).read_chunk(position)


def test_updates_api():
    data = _file(frames=CUT_FRAMES, layout="2.0-update")
    reader = LfqReader(io.BytesIO(data), entropy_model=MODEL)
    assert [(u.first_chunk, u.chunk_count) for u in reader.updates] == [(0, 1), (2, 3)]
    assert reader.update_for_chunk(0) == (0, bytes([0]) * 5)
    assert reader.update_for_chunk(1) is None
    assert [reader.update_for_chunk(i) for i in (2, 3, 4)] == [(3, bytes([2]) * 7)] * 3
    assert [c.update for c in reader.chunks] == [0, -1, 3, 3, 3]
    damaged = bytearray(data)
    damaged[reader.updates[1].offset + reader.updates[1].size - 1] ^= 1  # last payload byte of update 2
    reader = LfqReader(io.BytesIO(bytes(damaged)), entropy_model=MODEL)
    with pytest.raises(FormatError, match=r"decoder update \(record 3\): payload checksum mismatch"):
        reader.update_for_chunk(3)
    assert np.array_equal(reader.read_chunk(3), _persistent_chunks(frames=CUT_FRAMES)[3])  # chunks stay readable


def test_update_rules_in_the_writer():
    writer = LfqWriter(io.BytesIO(), HEADER, entropy_model=MODEL)
    writer.write_update(b"x", 0, 2)
    with pytest.raises(ValueError, match="overlap"):
        writer.write_update(b"y", 1, 1)
    writer.write_chunk(_chunks()[0], 9)
    with pytest.raises(ValueError, match="before them"):
        writer.write_update(b"y", 0, 1)
    with pytest.raises(ValueError, match="never written"):
        writer.close()
    with pytest.raises(ValueError, match="2.0"):
        LfqWriter(io.BytesIO(), HEADER, version=(1, 1)).write_update(b"x", 0, 1)


def test_unknown_record_types(tmp_path):
    """Types >= 0x8000 are skipped; an unknown type below that is refused (FORMAT.md, "Records")."""
    from lfqcodec.format import records

    for kind, readable in ((0x8001, True), (7, False)):
        buf = io.BytesIO()
        writer = LfqWriter(buf, HEADER, entropy_model=MODEL)
        chunks = _persistent_chunks()
        writer.write_chunk(chunks[0], 9)
        head = records.record_header(kind, 0, 1, 1, 1, 0, 0, 0, 0, b"future")
        writer.others.append(records.RecordEntry(1, kind, writer._position(), len(head) + 6, 1, 1))
        writer.file.write(head + b"future")
        for bits, n in zip(chunks[1:], FRAMES[1:]):
            writer.write_chunk(bits, n)
        writer.close()
        if readable:
            reader = LfqReader(io.BytesIO(buf.getvalue()), entropy_model=MODEL)
            assert [np.array_equal(reader.read_chunk(i), c) for i, c in enumerate(chunks)] == [True] * 3
        else:
            with pytest.raises(FormatError, match="payload type 7, which this reader does not know"):
                LfqReader(io.BytesIO(buf.getvalue()))


def test_writer_refuses_oversized_metadata():
    from dataclasses import replace

    with pytest.raises(FormatError, match="metadata"):
        LfqWriter(io.BytesIO(), replace(HEADER, metadata={"x": "y" * 70000}))


def test_salvage_finds_chunks_and_updates():
    data = _file(frames=CUT_FRAMES, layout="2.0-update")
    reader = LfqReader(io.BytesIO(data[:-30]), salvage=True, entropy_model=MODEL)  # index gone
    assert reader.index_damage and [c.index for c in reader.chunks] == [0, 1, 2, 3, 4]
    assert [(u.record, u.first_chunk, u.chunk_count) for u in reader.updates] == [(0, 0, 1), (3, 2, 3)]
    assert reader.update_for_chunk(4) == (3, bytes([2]) * 7)
