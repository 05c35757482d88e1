"""Hostile but valid files (issue 21): bounded memory and output, header fields checked against the
model, one-line refusals."""

import io
import tracemalloc
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import zstandard
from click.testing import CliRunner
from test_container import HEADER

import lfqcodec.format.container as container
from lfqcodec.model.checkpoint import load_model
from lfqcodec.cli.commands import main
from lfqcodec.format.container import LfqReader, LfqWriter, StreamHeader
from lfqcodec.codec.fileinfo import export_tokens
from lfqcodec.format.header import encode_header
from lfqcodec.format.records import ChunkEntry, chunk_header_v1, index_bytes, trailer_bytes


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _big_chunk_file(bits: int = 4, side: int = 8192, frames: int = 33) -> bytes:
    """A 1.1 file with one ``side x side`` chunk of zero bits: small on disk, large unpacked."""
    grid = side // 8
    header = StreamHeader(model_id=bytes(16), width=side, height=side, frame_count=frames, fps=Fraction(25),
                          time_base=Fraction(1, 25), bits=bits, model_bits=32, temporal_factor=4, spatial_factor=8,
                          gop=frames, grid_height=grid, grid_width=grid, chunk_count=1, version=(1, 1), coder=0)  # fmt: skip
    raw = (header.chunk_bits(frames) + 7) // 8
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
    payload = compressor.compress(bytes(raw))
    head = encode_header(header)
    entry = ChunkEntry(0, len(head), 0, 0, frames)
    chunk = chunk_header_v1(entry, header.latent_frames(frames), raw, payload) + payload
    entry = replace(entry, size=len(chunk))
    return head + chunk + index_bytes(1, [entry], []) + trailer_bytes(len(head) + len(chunk))


def test_large_chunk_is_read_a_latent_frame_at_a_time(monkeypatch, tmp_path):
    monkeypatch.setattr(container, "SPOOL_BYTES", 1 << 20)  # spill to a temporary file early
    data = _big_chunk_file()
    assert len(data) < 1 << 20
    reader = LfqReader(io.BytesIO(data))
    tracemalloc.start()
    frames = reader.iter_chunk(0)
    first = next(frames)  # 4 x 1024 x 1024 bits
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert first.shape == (4, 1024, 1024) and not first.any()
    assert peak < 12 << 20  # the whole chunk: 36 MiB as bool, 72 MiB as int64 indices
    assert sum(1 for _ in frames) == 8
    path = tmp_path / "big.lfq"
    path.write_bytes(data)
    tracemalloc.start()
    shape, _ = export_tokens(path, tmp_path / "big.npz", max_pixels=0)  # 8192 x 8192: over the default limit
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert shape == (9, 1024, 1024) and peak < 40 << 20  # output: 72 MiB of int64, streamed
    with np.load(tmp_path / "big.npz") as npz:
        assert npz["indices"].shape == (9, 1024, 1024) and list(npz["chunk_starts"]) == [0]
    result = run("tokens", path, tmp_path / "x.npz", "--max-pixels", 1920 * 1080)
    assert result.exit_code == 1 and "exceeds --max-pixels" in result.output
    result = run("tokens", path, tmp_path / "x.npz")  # the decoder's default limit: 3840 x 2160
    assert result.exit_code == 1 and "exceeds --max-pixels 8294400" in result.output
    assert not (tmp_path / "x.npz").exists()


def _tiny_id(tiny_model) -> tuple[bytes, object]:
    loaded = load_model(tiny_model)
    return loaded.model_id, loaded.config


@pytest.mark.parametrize("version", [(1, 1), (2, 0)])
def test_header_only_file_is_not_salvaged_forever(tmp_path, tiny_model, version):
    model_id, cfg = _tiny_id(tiny_model)
    header = StreamHeader(model_id=model_id, width=64, height=64, frame_count=2**31 - 1, fps=Fraction(25),
                          time_base=Fraction(1, 25), bits=6, model_bits=cfg.num_bits, temporal_factor=4,
                          spatial_factor=8, gop=4097, grid_height=8, grid_width=8, chunk_count=-(-(2**31 - 1) // 4097),
                          metadata={"model_name": "tiny-test"}, version=version, coder=version[0] - 1)  # fmt: skip
    path = tmp_path / "header-only.lfq"
    path.write_bytes(encode_header(header))
    result = run("decode", path, tmp_path / "out.mkv", "--model", tiny_model, "--salvage", "-q")
    assert result.exit_code == 1 and "no intact chunk" in result.output and len(result.output.splitlines()) == 1
    assert not (tmp_path / "out.mkv").exists()


@pytest.mark.parametrize("field, value, message", [
    ("temporal_factor", 2, "temporal factor 2"), ("bits", 5, "5 bits per token is none of"),
    ("model_bits", 10, "model bits 10"),
])  # fmt: skip
def test_header_fields_are_checked_against_the_model(tmp_path, tiny_model, field, value, message):
    model_id, cfg = _tiny_id(tiny_model)
    header = replace(HEADER, **{"model_id": model_id, "model_bits": cfg.num_bits, field: value})
    buf = io.BytesIO()
    writer = LfqWriter(buf, header)
    writer.write_chunk(np.zeros((header.bits, header.latent_frames(9), 7, 13), bool), 9)
    writer.close()
    path = tmp_path / "wrong.lfq"
    path.write_bytes(buf.getvalue())
    result = run("decode", path, tmp_path / "out.mkv", "--model", tiny_model, "-q")
    assert result.exit_code == 1 and message in result.output and len(result.output.splitlines()) == 1


def test_decoder_updates_are_must_understand(tmp_path, tiny_model):
    model_id, cfg = _tiny_id(tiny_model)
    header = replace(HEADER, model_id=model_id, model_bits=cfg.num_bits)
    buf = io.BytesIO()
    writer = LfqWriter(buf, header)
    writer.write_update(b"new decoder", 0, 1)
    writer.write_chunk(np.zeros((6, 3, 7, 13), bool), 9)
    writer.close()
    path = tmp_path / "update.lfq"
    path.write_bytes(buf.getvalue())
    result = run("decode", path, tmp_path / "out.mkv", "--model", tiny_model, "-q")
    assert result.exit_code == 1 and "decoder update (record 0)" in result.output
    result = run("info", path)
    assert result.exit_code == 0 and "1 decoder updates, 59 bytes, 1 chunks" in result.output


def test_info_escapes_control_characters(tmp_path):
    header = replace(HEADER, metadata={"model_name": "evil\x1b]0;owned\x07", "encoder": "x\u202ey\nz"})
    buf = io.BytesIO()
    writer = LfqWriter(buf, header)
    writer.write_chunk(np.zeros((6, 3, 7, 13), bool), 9)
    writer.close()
    path = tmp_path / "meta.lfq"
    path.write_bytes(buf.getvalue())
    result = run("info", path)
    assert result.exit_code == 0 and "\x1b" not in result.output and "\u202e" not in result.output
    assert "evil\\x1b]0;owned\\x07" in result.output and "x\\u202ey\\x0az" in result.output


def test_decode_refuses_frames_beyond_the_default_pixel_limit(tmp_path):
    path = tmp_path / "big.lfq"
    path.write_bytes(_big_chunk_file())  # 8192 x 8192: about 8 x the 8.4 GiB a 4K decode took
    result = run("decode", path, tmp_path / "out.mkv")
    assert result.exit_code == 1 and "exceeds --max-pixels 8294400" in result.output
    assert not (tmp_path / "out.mkv").exists()


def test_sigterm_leaves_no_partial_output(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "big.lfq"
    path.write_bytes(_big_chunk_file(bits=32, frames=257))  # 2.3 GB of int64 tokens: seconds to write
    process = subprocess.Popen([sys.executable, "-m", "lfqcodec.cli", "tokens", str(path), str(tmp_path / "t.npz"),
                                "--max-pixels", "0"], stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 120
    while not any(".partial" in p.name for p in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.05)  # until the output is being written
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and b"terminated" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.lfq"]
