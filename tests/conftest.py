"""Shared fixtures: a tiny random model (mechanics only) and small generated clips."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from lfqcodec.model.checkpoint import save_model
from lfqcodec.model.config import TokenizerConfig
from lfqcodec.model.tokenizer import TokenizerNet
from lfqcodec.io.videoio import mux_frames

TINY_CONFIG = TokenizerConfig(
    num_bits=12,
    channels=(16, 32),
    encoder_blocks=(1, 1),
    decoder_blocks=(1, 1),
    refine_channels=(8, 4),
    quality_bits={"low": 3, "medium": 6, "high": 12},
)


def tiny_tokenizer(seed: int = 0) -> TokenizerNet:
    torch.manual_seed(seed)
    model = TokenizerNet(TINY_CONFIG)
    with torch.no_grad():  # non-zero residual branches, so every layer matters in the tests
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0, 0.15)
    return model.eval()


@pytest.fixture(scope="package")  # one per test run (tests/ is one package)
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(path, tiny_tokenizer(), "tiny-test")
    return path


def moving_pattern(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth moving colour pattern: ``T x H x W x 3`` uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    out = []
    for t in range(frames):
        chans = [np.sin((x + 2 * t) / (5 + 3 * c) + phase[c]) * np.cos((y - t) / (7 + 2 * c)) for c in range(3)]
        out.append(((np.stack(chans, -1) + 1) * 127.5).astype(np.uint8))
    return np.stack(out)


def write_clip(path: Path, frames: np.ndarray, fps: Fraction = Fraction(24000, 1001), codec: str = "ffv1") -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        mux_frames(container, stream, frames)
    return path


@pytest.fixture(scope="package")  # one per test run (tests/ is one package)
def odd_clip(tmp_path_factory) -> Path:
    """11 frames (not 1 + 4k) at 37x21 (not multiples of 8), lossless, 24000/1001 fps."""
    return write_clip(tmp_path_factory.mktemp("clips") / "odd.mkv", moving_pattern(11, 21, 37))
