"""The prepared GPU run at toy scale on the CPU (same code path), the pack, parts, and architecture growth."""

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, moving_pattern, tiny_tokenizer, write_clip

from lfqcodec.training import gpu_run
from lfqcodec.model.checkpoint import load_model
from lfqcodec.training.datapack import PackConfig, build_pack, read_pack
from lfqcodec.base.errors import LfqError
from lfqcodec.training.shards import join_parts, split_file
from lfqcodec.training.surgery import drop_decoder_block
from lfqcodec.model.tokenizer import TokenizerNet
from lfqcodec.training.recipe import TrainConfig, learning_rate, warm_start


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    src = tmp_path_factory.mktemp("material")
    videos = [write_clip(src / f"clip{i}.mkv", moving_pattern(40, 64, 80, seed=i)) for i in range(2)]
    from PIL import Image

    photo = src / "photo.png"
    Image.fromarray(moving_pattern(1, 160, 200, seed=5)[0]).save(photo)
    val = write_clip(src / "val.mkv", moving_pattern(12, 48, 48, seed=9))
    out = tmp_path_factory.mktemp("pack") / "pack"
    cfg = PackConfig(video_side=48, photo_side=160, val_frames=9, val_side=32, budget_bytes=4 << 20)
    manifest = build_pack(videos, [photo], [val], out, cfg)
    assert manifest["bytes"] <= cfg.budget_bytes and len(manifest["videos"]) == 2
    return out


def test_pack_decodes_to_the_material(pack, tmp_path):
    cached, validation = read_pack(pack, tmp_path / "cache")
    videos = [np.load(p) for p in cached if p.name.startswith("video-")]
    assert [v.shape for v in videos] == [(40, 48, 60, 3)] * 2
    assert [p.name for p in cached if p.name.startswith("image-")] == ["image-photo.npy"]
    assert validation[0][0] == "val" and tuple(validation[0][1].shape) == (9, 32, 32, 3)


def test_altered_pack_is_refused(pack, tmp_path):
    import shutil

    copy = tmp_path / "pack"
    shutil.copytree(pack, copy)
    clip = next((copy / "videos").iterdir())
    clip.write_bytes(clip.read_bytes()[:-10])
    with pytest.raises(LfqError, match="altered"):
        read_pack(copy, tmp_path / "cache")


@pytest.mark.parametrize("design", ["refiner", "residual"])
def test_gpu_run_end_to_end_at_toy_scale(pack, tmp_path, tiny_model, design):
    out = tmp_path / "out"
    extra = ["--residual-bits", "6", "--train-only", "residual"] if design == "residual" else []
    gpu_run.main([
        "--pack", str(pack), "--out", str(out), "--work", str(tmp_path / "work"), "--init", str(tiny_model),
        "--steps", "2", "--minutes", "5", "--val-minutes", "0.0001", "--batch", "2", "--image-batch", "2",
        "--size", "32", "--image-size", "32", "--frames", "9", "--workers", "1", "--device", "cpu",
        "--precision", "fp32", "--refine-blocks", "2,1", "--frame-split", "--warmup", "1", *extra,
    ])  # fmt: skip
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size < 16 << 20 for f in files)
    assert {"train.jsonl", "val.jsonl", "summary.txt", "lfq-base.safetensors.parts.json"} <= set(files)
    rows = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows][0] == 0 and rows[-1]["step"] == 2  # the start, then the end
    model = load_model(join_parts(out / "lfq-base.safetensors.parts.json", tmp_path / "joined.safetensors"))
    assert model.config.refine_blocks == (2, 1) and model.config.frame_split
    assert model.config.residual_bits == (6 if design == "residual" else 0)
    assert "medium dB" in (out / "summary.txt").read_text()


def test_parts_join_back_and_tampering_is_caught(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    (tmp_path / "w.bin").write_bytes(data)
    out = tmp_path / "parts"
    out.mkdir()
    assert len(split_file(tmp_path / "w.bin", out, part_bytes=3000)) == 4
    assert join_parts(out / "w.bin.parts.json", tmp_path / "back.bin").read_bytes() == data
    (out / "w.bin.part-01").write_bytes(b"x" * 3000)
    with pytest.raises(LfqError, match="SHA-256"):
        join_parts(out / "w.bin.parts.json", tmp_path / "again.bin")


def _decode(model: TokenizerNet, bits: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.decode(bits)


def test_grown_refiner_reproduces_the_model_until_trained():
    source = tiny_tokenizer()
    grown = TokenizerNet(dataclasses.replace(TINY_CONFIG, refine_blocks=(3, 2), frame_split=True))
    fresh = warm_start(grown, source)
    assert any("frame_in" in n for n in fresh) and any("extra" in n for n in fresh)
    bits = source.encode(torch.rand(1, 3, 9, 32, 32) * 2 - 1)
    assert torch.equal(_decode(source, bits), _decode(grown.eval(), bits))


def test_dropping_a_block_equals_skipping_it():
    source = TokenizerNet(dataclasses.replace(TINY_CONFIG, decoder_blocks=(1, 3)))
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0, 0.1)
    source.eval()
    dropped = drop_decoder_block(source, level=1, block=1)
    assert dropped.cfg.decoder_blocks == (1, 2)
    bits = source.encode(torch.rand(1, 3, 5, 32, 32) * 2 - 1)
    reference = _decode(dropped, bits)
    source.decoder.levels[0][1] = torch.nn.Identity()  # levels run coarsest first: config level 1
    assert torch.allclose(_decode(source, bits), reference)
    with pytest.raises(ValueError):
        drop_decoder_block(dropped, level=0, block=0)  # a single block


def test_time_budget_drives_the_cosine():
    cfg = TrainConfig(lr=1.0, warmup=10, steps=100, min_lr_ratio=0.0)
    assert learning_rate(5, cfg) == pytest.approx(0.6)
    assert learning_rate(50, cfg, progress=0.0) == pytest.approx(1.0)
    assert learning_rate(50, cfg, progress=0.5) == pytest.approx(0.5)
    assert learning_rate(50, cfg, progress=2.0) == pytest.approx(0.0)


def test_the_checkout_leaves_room_for_the_training_pack():
    """A device call carries at most 64 MiB: the tracked checkout plus ``.gpu-pack`` (about 10 MiB).
    Results and pictures committed here must not crowd the pack out."""
    repo = Path(__file__).resolve().parent.parent
    try:
        listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z"], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    tracked = sum((repo / n.decode()).stat().st_size for n in listed.split(b"\0") if n and (repo / n.decode()).is_file())
    assert tracked <= (64 - 12) << 20, f"the checkout is {tracked / 2**20:.1f} MiB: leave 12 MiB for the pack"
