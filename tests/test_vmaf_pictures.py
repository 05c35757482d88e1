"""VMAF (lfqcodec.bench.vmaf) and the bench's side-by-side pictures (lfqcodec.bench.pictures)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import moving_pattern

from lfqcodec.bench import vmaf as vmaf_module
from lfqcodec.bench.suite import read_clip
from lfqcodec.cli.commands import main
from lfqcodec.base.errors import LfqError
from lfqcodec.bench.pictures import choose_crop, chunk_starts

CARPHONE = Path(__file__).parent / "data" / "carphone_33f.mp4"


@pytest.fixture(scope="module")
def carphone() -> np.ndarray:
    return read_clip(CARPHONE, 9)[0]


def test_rgb_to_yuv_is_bt601_limited_range():
    rgb = np.array([[[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]]]], np.uint8)  # 1 x 1 x 4 x 3
    yuv = vmaf_module.rgb_to_yuv444(rgb)[0, :, 0]  # 3 x 4
    assert yuv[:, 0].tolist() == [16, 128, 128] and yuv[:, 1].tolist() == [235, 128, 128]
    assert yuv[:, 2].tolist() == [81, 90, 240] and yuv[:, 3].tolist() == [41, 240, 110]  # BT.601 red, blue


def test_vmaf_of_a_clip_against_itself_is_about_100_and_falls_when_degraded(carphone):
    same = vmaf_module.vmaf(carphone, carphone)
    assert same.mean > 97 and len(same.per_frame) == len(carphone)
    rng = np.random.default_rng(0)
    noisy = np.clip(carphone.astype(int) + rng.normal(0, 12, carphone.shape), 0, 255).astype(np.uint8)
    blurred = ((carphone[:, ::2, ::2].astype(np.uint16).repeat(2, 1).repeat(2, 2)[:, : carphone.shape[1], : carphone.shape[2]]
                + carphone) // 2).astype(np.uint8)  # fmt: skip
    noisy_score, blurred_score = vmaf_module.vmaf(carphone, noisy).mean, vmaf_module.vmaf(carphone, blurred).mean
    assert noisy_score < same.mean - 5 and blurred_score < same.mean - 2
    coarse = carphone[:, ::4, ::4].repeat(4, 1).repeat(4, 2)[:, : carphone.shape[1], : carphone.shape[2]]
    assert vmaf_module.vmaf(carphone, coarse).mean < blurred_score  # more loss, lower score


def test_vmaf_settings_name_model_and_conversion():
    record = vmaf_module.settings()
    assert record["model"] == "vmaf_v0.6.1" and record["libvmaf"] != "unknown"
    assert record["rgb_to_yuv"]["matrix"] == "bt601" and record["rgb_to_yuv"]["range"].startswith("limited")


def test_vmaf_without_imageio_ffmpeg_is_one_clear_error(monkeypatch):
    vmaf_module.ffmpeg_with_libvmaf.cache_clear()
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails as if not installed
    with pytest.raises(LfqError, match=r"pip install 'lfqcodec\[bench\]'"):
        vmaf_module.vmaf(np.zeros((2, 16, 16, 3), np.uint8), np.zeros((2, 16, 16, 3), np.uint8))
    vmaf_module.ffmpeg_with_libvmaf.cache_clear()


def test_bench_without_the_extra_says_so_in_one_line(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "imageio_ffmpeg" else real(name, *a))
    result = CliRunner().invoke(main, ["bench", str(CARPHONE)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "lfqcodec: error: lfqcodec bench needs the bench extra (imageio-ffmpeg is missing): pip install 'lfqcodec[bench]'"
    ]


def test_chunk_starts_follow_gop_and_scene_cuts():
    frames = moving_pattern(20, 32, 32)
    assert chunk_starts(frames, gop=5) == [0, 5, 10, 15]
    frames[7:] = 255 - frames[7:]  # a hard cut at frame 7: a chunk starts there, counting again from it
    assert chunk_starts(frames, gop=5) == [0, 5, 7, 12, 17]


def test_choose_crop_takes_a_moving_frame_inside_a_chunk():
    frames = np.full((17, 80, 300, 3), 128, np.uint8)
    frames[11, 20:40, 250:280] = 0  # the only change: a block appears at frame 11 and goes at 12
    crop = choose_crop(frames, gop=17, side=64)
    assert crop.frame in (11, 12) and crop.chunk_starts == [0]
    assert crop.left <= 250 and crop.left + crop.width >= 280 and (crop.height, crop.width) == (64, 64)
    small = choose_crop(frames[:, :40, :60], gop=8)
    assert (small.height, small.width, small.scale) == (40, 60, 4) and small.frame not in small.chunk_starts
