"""The shipped default model on a few frames of a real clip it never saw in training."""

from pathlib import Path

import av
import numpy as np
import pytest
import torch

import lfqcodec
from lfqcodec.model.checkpoint import load_model
from lfqcodec.base.metrics import psnr

SAMPLE = Path(__file__).parent / "data" / "carphone_33f.mp4"  # real footage, held out from training
PSNR_FLOOR = 20.0  # dB at --quality medium (the shipped model gives 22.65); a random model of this architecture gives ~9.6


def _frames(path: Path, count: int) -> np.ndarray:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(count))]
    return np.stack(frames)


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shipped")
    results = {}
    for quality in ("low", "medium", "high"):
        lfq = folder / f"{quality}.lfq"
        report = lfqcodec.encode_file(SAMPLE, lfq, quality=quality, device="cpu", max_frames=9)
        out = folder / f"{quality}.mkv"
        lfqcodec.decode_file(lfq, out, device="cpu")
        results[quality] = (report, _frames(out, 9))
    return results


def test_shipped_model_loads_by_default():
    model = load_model()
    assert model.name == "lfq-base" and model.config.quality_bits == {"low": 4, "medium": 16, "high": 32}
    assert model.config.refine_channels == (32, 16)


def test_shipped_model_reconstructs_real_video(roundtrip):
    source = torch.from_numpy(_frames(SAMPLE, 9)).float()
    report, decoded = roundtrip["medium"]
    assert decoded.shape == (9, 144, 176, 3)
    assert psnr(source, torch.from_numpy(decoded).float()) > PSNR_FLOOR
    assert report.bits_per_pixel < 0.2


def test_quality_levels_increase_file_size(roundtrip):
    sizes = [roundtrip[q][0].file_bytes for q in ("low", "medium", "high")]
    assert sizes[0] < sizes[1] < sizes[2]
