"""``lfqcodec detokenize``: token files back to the frames ``decode`` gives, and one-line errors for bad tokens."""

from __future__ import annotations

import zipfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from conftest import moving_pattern, tiny_tokenizer, write_clip
from test_adapt import _random_update

import lfqcodec
from lfqcodec.codec.adapt import UpdateSpec
from lfqcodec.codec.chunks import Codec, encode_chunks
from lfqcodec.model.checkpoint import load_model, save_model
from lfqcodec.cli.commands import main
from lfqcodec.format.container import LfqWriter, StreamHeader
from test_cli import read_frames


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def fails(*args, message: str):
    result = run(*args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lfqcodec: error: ") and message in lines[0], result.output
    return lines[0]


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory) -> Path:
    """14 frames of 37x21 with a scene cut after the 5th."""
    frames = np.concatenate([moving_pattern(5, 21, 37, seed=1), 255 - moving_pattern(9, 21, 37, seed=8)])
    return write_clip(tmp_path_factory.mktemp("cut") / "cut.mkv", frames)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, cut_clip, tiny_model):
    """``(lfq, npz, decoded frames)`` at quality medium, GOP 9, scene cuts on (chunks of 5, 9 frames)."""
    folder = tmp_path_factory.mktemp("encoded")
    lfq, npz = folder / "a.lfq", folder / "a.npz"
    ok("encode", cut_clip, lfq, "--model", tiny_model, "--gop", "9", "-q")
    ok("tokens", lfq, npz, "--sub-bits", "4")
    ok("decode", lfq, folder / "a.mkv", "--model", tiny_model, "-q")
    return lfq, npz, read_frames(folder / "a.mkv")[0]


def rewrite(src: Path, dst: Path, drop=(), **arrays) -> Path:
    """``src``'s arrays with some dropped or replaced, as another .npz."""
    data = {k: v for k, v in np.load(src).items() if k not in drop}
    np.savez(dst, **{**data, **arrays})
    return dst


@pytest.mark.parametrize("quality,gop", [("low", 5), ("medium", 9), ("high", 33), ("high", 5)])
def test_tokens_then_detokenize_equals_decode(tmp_path, odd_clip, tiny_model, quality, gop):
    lfq = tmp_path / "a.lfq"
    ok("encode", odd_clip, lfq, "--model", tiny_model, "--quality", quality, "--gop", gop, "-q")
    ok("tokens", lfq, tmp_path / "a.npz")
    ok("decode", lfq, tmp_path / "dec.mkv", "--model", tiny_model, "--window", "1", "-q")
    ok("detokenize", tmp_path / "a.npz", tmp_path / "det.mkv", "--model", tiny_model, "--window", "1", "-q")
    (expected, fps), (got, got_fps) = read_frames(tmp_path / "dec.mkv"), read_frames(tmp_path / "det.mkv")
    assert len(got) == 11 and np.array_equal(np.stack(got), np.stack(expected))
    assert got_fps == fps == Fraction(24000, 1001)


def test_scene_cut_chunks_sub_tokens_and_lfq_output(tmp_path, encoded, tiny_model):
    lfq, npz, expected = encoded
    npz_data = np.load(npz)
    assert list(npz_data["chunk_frames"]) == [5, 9] and str(npz_data["format"]) == "lfqcodec-tokens-v2"
    ok("detokenize", npz, tmp_path / "det.mkv", "--model", tiny_model, "-q")
    assert np.array_equal(np.stack(read_frames(tmp_path / "det.mkv")[0]), np.stack(expected))
    sub = rewrite(npz, tmp_path / "sub.npz", drop=("indices",))  # sub-tokens reassembled when indices are absent
    ok("detokenize", sub, tmp_path / "sub.mkv", "--model", tiny_model, "-q")
    assert np.array_equal(np.stack(read_frames(tmp_path / "sub.mkv")[0]), np.stack(expected))
    ok("detokenize", npz, tmp_path / "back.lfq", "--model", tiny_model, "-q")  # tokens -> .lfq -> decode
    ok("decode", tmp_path / "back.lfq", tmp_path / "back.mkv", "--model", tiny_model, "-q")
    assert np.array_equal(np.stack(read_frames(tmp_path / "back.mkv")[0]), np.stack(expected))
    assert np.array_equal(lfqcodec.read_tokens(tmp_path / "back.lfq").indices, npz_data["indices"])
    info = lfqcodec.read_info(tmp_path / "back.lfq")
    assert (info["fps"], info["width"], info["height"]) == ("24000/1001", 37, 21)
    assert [c["frames"] for c in info["chunks"]] == [5, 9]
    fails("detokenize", npz, tmp_path / "one.png", "--model", tiny_model, "--frames", "1", message="do not fit")
    first = rewrite(npz, tmp_path / "first.npz", indices=npz_data["indices"][:1])  # edited: laid out again
    ok("detokenize", first, tmp_path / "one.png", "--model", tiny_model, "--frames", "1", "-q")
    assert np.array_equal(read_frames(tmp_path / "one.png")[0][0], expected[0])  # causal: frame 0 alone


def test_shard_rows_then_detokenize_equal_decode(tmp_path, cut_clip, tiny_model):
    settings = ["--model", tiny_model, "--gop", "9"]
    ok("tokenize", cut_clip, "--out", tmp_path / "ds", *settings, "--workers", "1", "-q")
    ok("encode", cut_clip, tmp_path / "a.lfq", *settings, "-q")
    ok("decode", tmp_path / "a.lfq", tmp_path / "dec.mkv", "--model", tiny_model, "-q")
    ok("detokenize", tmp_path / "ds", tmp_path / "row.mkv", "--shard", "0", "--row", "0", "--model", tiny_model, "-q")
    (expected, fps), (got, got_fps) = read_frames(tmp_path / "dec.mkv"), read_frames(tmp_path / "row.mkv")
    assert np.array_equal(np.stack(got), np.stack(expected)) and got_fps == fps
    row = pq.read_table(tmp_path / "ds" / "shard-00000.parquet").to_pylist()[0]
    assert row["chunk_frames"] == [5, 9] and (row["fps_num"], row["fps_den"]) == (24000, 1001)
    # windows of a clip: --clip decodes them in order, each as its own row
    ok("tokenize", cut_clip, "--out", tmp_path / "win", *settings, "--clip-frames", "6", "--workers", "1", "-q")
    shard = tmp_path / "win" / "shard-00000.parquet"
    ok("detokenize", shard, tmp_path / "clip.mkv", "--clip", str(cut_clip), "--model", tiny_model, "-q")
    parts = []
    for index in range(3):
        ok("detokenize", shard, tmp_path / f"r{index}.mkv", "--row", index, "--model", tiny_model, "-q")
        parts += read_frames(tmp_path / f"r{index}.mkv")[0]
    clip_frames = read_frames(tmp_path / "clip.mkv")[0]
    assert len(clip_frames) == 14 and np.array_equal(np.stack(clip_frames), np.stack(parts))
    fails("detokenize", shard, tmp_path / "x.mkv", "--row", "3", "--model", tiny_model, message="row 3 does not exist")
    fails("detokenize", tmp_path / "win", tmp_path / "x.mkv", "--shard", "4", message="shard 4 does not exist")
    fails("detokenize", shard, tmp_path / "x.mkv", "--clip", "nope.mp4", message="no rows of clip")


def test_older_token_files_decode_with_options_or_are_refused(tmp_path, encoded, odd_clip, tiny_model):
    lfq, npz, expected = encoded
    v1_members = ("indices", "bits", "chunk_starts", "width", "height", "frame_count", "gop", "temporal_factor",
                  "spatial_factor")  # fmt: skip
    data = np.load(npz)
    v1 = tmp_path / "v1.npz"
    np.savez(v1, **{k: data[k] for k in v1_members})
    fails("detokenize", v1, tmp_path / "x.mkv", "--model", tiny_model, "--fps", "25", message="scene-cut chunks")
    ok("encode", odd_clip, tmp_path / "b.lfq", "--model", tiny_model, "--gop", "5", "-q")  # no cuts: 5 + 5 + 1
    ok("tokens", tmp_path / "b.lfq", tmp_path / "b.npz")
    ok("decode", tmp_path / "b.lfq", tmp_path / "b.mkv", "--model", tiny_model, "-q")
    data = np.load(tmp_path / "b.npz")
    np.savez(v1, **{k: data[k] for k in v1_members})
    fails("detokenize", v1, tmp_path / "x.mkv", "--model", tiny_model, message="pass --fps")
    result = ok("detokenize", v1, tmp_path / "v1.mkv", "--model", tiny_model, "--fps", "24000/1001", "-q")
    assert "token format 1" in result.output  # the assumption is said
    (expected, fps), (got, got_fps) = read_frames(tmp_path / "b.mkv"), read_frames(tmp_path / "v1.mkv")
    assert np.array_equal(np.stack(got), np.stack(expected)) and got_fps == fps
    bare = tmp_path / "bare.npz"  # a language model's output: indices alone
    np.savez(bare, indices=data["indices"])
    fails("detokenize", bare, tmp_path / "x.mkv", "--model", tiny_model, "--fps", "25", message="pass --quality")
    ok("detokenize", bare, tmp_path / "bare.mkv", "--model", tiny_model, "--fps", "25", "--quality", "medium",
       "--gop", "5", "--frames", "11", "--size", "37x21", "-q")  # fmt: skip
    assert np.array_equal(np.stack(read_frames(tmp_path / "bare.mkv")[0]), np.stack(expected))


def test_files_with_decoder_updates_are_refused(tmp_path, tiny_model):
    loaded = load_model(tiny_model)
    cfg, frames = loaded.config, moving_pattern(9, 16, 16, seed=2)
    keep = cfg.quality_bits["medium"]
    header = StreamHeader(model_id=loaded.model_id, width=16, height=16, frame_count=0, fps=Fraction(25),
                          time_base=Fraction(1, 25), bits=keep, model_bits=cfg.num_bits, temporal_factor=4,
                          spatial_factor=8, gop=5, grid_height=2, grid_width=2, metadata={"model_name": loaded.name})  # fmt: skip
    with open(tmp_path / "u.lfq", "wb") as out:
        writer = LfqWriter(out, header, 3, (2, 0))
        writer.write_update(_random_update(loaded.tokenizer, UpdateSpec(), seed=5).to_bytes(), 1, 1)
        for chunk in encode_chunks(Codec(loaded, torch.device("cpu")), iter(frames), 16, 16, 5, keep, scenecut=0):
            writer.write_chunk(chunk.bits[:keep], chunk.frames)
        writer.close()
    ok("tokens", tmp_path / "u.lfq", tmp_path / "u.npz")
    assert int(np.load(tmp_path / "u.npz")["decoder_updates"]) == 1
    fails("detokenize", tmp_path / "u.npz", tmp_path / "u.mkv", "--model", tiny_model, message="decoder update")


@pytest.mark.parametrize(
    "arrays,message",
    [
        (lambda d: {"indices": d["indices"] + (1 << 6)}, "outside [0, 2^6)"),
        (lambda d: {"indices": d["indices"] - 100}, "outside [0, 2^6)"),
        (lambda d: {"indices": d["indices"][:, :, :-1]}, "need T' x 3 x 5"),
        (lambda d: {"indices": d["indices"][0]}, "expected T' x h x w"),
        (lambda d: {"indices": d["indices"][:0]}, "is empty"),
        (lambda d: {"indices": d["indices"][:-1]}, "pass --frames"),
        (lambda d: {"indices": d["indices"].astype(np.float32)}, "not integers"),
        (lambda d: {"indices": np.full(d["indices"].shape, np.nan)}, "not integers"),
        (lambda d: {"indices": d["indices"].astype(object)}, "cannot read member"),
        (lambda d: {"sub_indices": d["sub_indices"][..., :1], "drop": "indices"}, "do not make 6-bit tokens"),
        (lambda d: {"sub_indices": d["sub_indices"] + 16, "drop": "indices"}, "outside [0, 2^4)"),
        (lambda d: {"model_id": np.array("00" * 16)}, "not installed"),
        (lambda d: {"bits": np.int64(5)}, "none of model"),
    ],
)
def test_bad_tokens_are_one_line_errors(tmp_path, encoded, tiny_model, arrays, message):
    _, npz, _ = encoded
    data = np.load(npz)
    replaced = arrays(data)
    drop = replaced.pop("drop", ())
    bad = rewrite(npz, tmp_path / "bad.npz", drop=(drop,) if drop else (), **replaced)
    model = [] if "model_id" in replaced else ["--model", tiny_model]
    fails("detokenize", bad, tmp_path / "out.mkv", *model, message=message)
    assert not (tmp_path / "out.mkv").exists()


def test_other_bad_inputs_are_one_line_errors(tmp_path, encoded, tiny_model):
    _, npz, _ = encoded
    fails("detokenize", tmp_path / "missing.npz", tmp_path / "x.mkv", message="no such file")
    (tmp_path / "text.npz").write_text("not a zip file\n")
    fails("detokenize", tmp_path / "text.npz", tmp_path / "x.mkv", message="cannot read")
    with zipfile.ZipFile(tmp_path / "none.npz", "w") as archive:
        archive.writestr("other.npy", b"")
    fails("detokenize", tmp_path / "none.npz", tmp_path / "x.mkv", message="no indices or sub_indices")
    header = tmp_path / "header.npy"  # a header that claims far more than the file holds
    with open(header, "wb") as out:
        np.lib.format.write_array_header_2_0(out, {"descr": "<i8", "fortran_order": False, "shape": (10**12, 3, 5)})
        out.write(bytes(120))
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as archive:
        archive.write(header, "indices.npy")
    fails("detokenize", tmp_path / "huge.npz", tmp_path / "x.mkv", message="more than its")
    other = tmp_path / "other.safetensors"
    save_model(other, tiny_tokenizer(seed=1), "other")
    fails("detokenize", npz, tmp_path / "x.mkv", "--model", other, message="was made with model")
    fails("detokenize", npz, tmp_path / "x.mkv", "--model", tiny_model, "--max-pixels", "100", message="--max-pixels")
    fails("detokenize", npz, tmp_path / "x.png", "--model", tiny_model, message="holds one frame")
    fails("detokenize", npz, tmp_path / "x.mkv", "--model", tiny_model, "--size", "64x64", message="need T' x 8 x 8")
    fails("detokenize", npz, tmp_path / "x.mkv", "--model", tiny_model, "--row", "1", message="not a folder")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "x.parquet")
    fails("detokenize", tmp_path / "x.parquet", tmp_path / "x.mkv", message="not a token shard")


def test_shipped_model_lfq_output_is_context_coded(tmp_path):
    from lfqcodec.tokens.detokenize import detokenize_file

    clip = Path(__file__).parent / "data" / "carphone_33f.mp4"
    lfq, npz = tmp_path / "c.lfq", tmp_path / "c.npz"
    lfqcodec.encode_file(clip, lfq, device="cpu", max_frames=9, gop=9)
    lfqcodec.export_tokens(lfq, npz)
    detokenize_file(npz, tmp_path / "back.lfq", device="cpu")
    info = lfqcodec.read_info(tmp_path / "back.lfq")
    assert info["context_coded_chunks"] == 1 and info["model"]["name"] == "lfq-base" and info["fps"] == "30000/1001"
    assert np.array_equal(lfqcodec.read_tokens(tmp_path / "back.lfq").indices, np.load(npz)["indices"])
    detokenize_file(npz, tmp_path / "det.mkv", device="cpu")
    expected = np.stack(list(lfqcodec.decode_frames(lfq, device="cpu")))
    assert np.array_equal(np.stack(read_frames(tmp_path / "det.mkv")[0]), expected)
