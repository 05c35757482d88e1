import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import moving_pattern, write_clip

from lfqcodec.bench.suite import RdPoint, bd_rate, quality_metrics
from lfqcodec.bench.report import format_bd
from lfqcodec.cli.commands import main
from lfqcodec.base.metrics import ms_ssim, psnr


def test_identical_frames_give_infinite_psnr_and_unit_ms_ssim():
    frames = torch.rand(2, 3, 64, 64) * 255
    assert psnr(frames, frames) == math.inf
    assert ms_ssim(frames, frames) == pytest.approx(1.0)


def test_known_noise_gives_expected_psnr():
    frames = torch.full((1, 3, 32, 32), 100.0)
    noisy = frames + torch.where(torch.rand_like(frames) < 0.5, -5.0, 5.0)  # |error| = 5 everywhere
    assert psnr(frames, noisy) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-9)
    assert 0 < ms_ssim(frames + torch.randn_like(frames) * 20, frames) < 1


def test_quality_metrics_on_uint8_frames():
    frames = moving_pattern(3, 48, 64)
    metrics = quality_metrics(frames, frames)
    assert metrics["psnr_rgb"] == math.inf and metrics["ms_ssim_y"] == pytest.approx(1.0)


def _curve(codec, rates, dists):
    return [RdPoint("c", codec, str(i), "cpu", 1, 1, 1, 1, r, 0, d, d, d, d, 1, 1, None, None)
            for i, (r, d) in enumerate(zip(rates, dists))]  # fmt: skip


def test_bd_rate_worked_example():
    """A test curve that reaches every quality with 20% fewer bits has a BD-rate of exactly -20%."""
    rates = np.array([0.05, 0.1, 0.2, 0.4])
    dists = np.array([28.0, 31.0, 34.0, 37.0])
    result = bd_rate(_curve("x265", rates, dists), _curve("lfqcodec", rates * 0.8, dists), "psnr_rgb")
    assert result["bd_rate_percent"] == pytest.approx(-20.0, abs=1e-6)
    result = bd_rate(_curve("x265", rates, dists), _curve("lfqcodec", rates * 1.5, dists[[0, 1, 2, 3]]), "psnr_rgb")
    assert result["bd_rate_percent"] == pytest.approx(50.0, abs=1e-6)


def test_bd_rate_reports_no_overlap():
    result = bd_rate(_curve("x265", [0.1, 0.2], [30, 35]), _curve("lfqcodec", [0.05, 0.1], [20, 22]), "psnr_rgb")
    assert result["bd_rate_percent"] is None and "no overlap" in result["note"]


def test_bench_end_to_end(tmp_path, tiny_model):
    clip = write_clip(tmp_path / "clip.mkv", moving_pattern(5, 64, 64))  # x265 crashes on some tiny sizes
    result = CliRunner().invoke(main, ["bench", str(clip), "--frames", "5", "--gop", "5", "--model", str(tiny_model),
                                       "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "rd.png"), "--search", "2",
                                       "--frames-png", str(tmp_path / "frames"), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r.json").read_text())
    codecs = {p["codec"] for p in record["points"]}
    assert codecs == {"lfqcodec", "x265"}
    x265 = [p for p in record["points"] if p["codec"] == "x265"]
    assert len(x265) >= 5 and all(p["frames"] == 5 and p["bpp"] > 0 for p in x265)
    assert "clip.mkv" in record["bd_rate_vs_x265"]
    assert (tmp_path / "rd.png").stat().st_size > 1000
    assert "BD-rate of lfqcodec vs x265" in result.output
    assert record["settings"]["lfqcodec_search_steps"] == 2 and "with --search 2" in result.output
    assert all(0 <= p["vmaf"] <= 100 for p in record["points"]) and "VMAF" in result.output.splitlines()[1]
    assert record["vmaf"]["model"] == "vmaf_v0.6.1" and record["vmaf"]["rgb_to_yuv"]["matrix"] == "bt601"
    assert set(record["bd_rate_vs_x265"]["clip.mkv"]) == {"psnr_rgb", "psnr_y", "ms_ssim_y", "vmaf"}
    [shown] = record["pictures"]
    assert shown["png"] == "clip.png" and shown["crop"]["frame"] not in shown["crop"]["chunk_starts"]
    assert [row["lfqcodec"] for row in shown["rows"]] == ["low", "medium", "high"] and all(row["x265"] for row in shown["rows"])
    assert (tmp_path / "frames" / "clip.png").stat().st_size > 1000


def test_bd_rate_leaves_out_points_no_better_than_cheaper_ones():
    """VMAF can fall from medium to high: such a point is left out, not an error."""
    anchor = _curve("x265", [0.05, 0.1, 0.2, 0.4], [20.0, 40.0, 60.0, 80.0])
    test = _curve("lfqcodec", [0.06, 0.12, 0.2], [25.0, 45.0, 44.0])
    result = bd_rate(anchor, test, "vmaf")
    assert result["bd_rate_percent"] is not None and "1 point(s) left out" in result["note"]
    assert bd_rate(anchor, _curve("lfqcodec", [0.06, 0.12], [25.0, 25.0]), "vmaf")["bd_rate_percent"] is None


def test_bd_rate_over_a_sliver_of_overlap_is_marked_not_meaningful():
    anchor = _curve("x265", [0.05, 0.1, 0.2, 0.4], [20.0, 25.0, 30.0, 35.0])  # 20..35
    wide = bd_rate(anchor, _curve("lfqcodec", [0.04, 0.08, 0.16], [22.0, 28.0, 33.0]), "psnr_rgb")
    assert wide["meaningful"] and wide["overlap_share"]["test"] == pytest.approx(1.0)
    sliver = bd_rate(anchor, _curve("lfqcodec", [0.01, 0.02, 0.03], [10.0, 15.0, 21.0]), "psnr_rgb")
    assert sliver["overlap"] == [20.0, 21.0] and not sliver["meaningful"]
    assert sliver["overlap_share"] == pytest.approx({"anchor": 1 / 15, "test": 1 / 11})
    shown = format_bd("psnr_rgb", sliver)
    assert "7% of x265's range, 9% of lfqcodec's" in shown and "not meaningful" in shown
    assert "not meaningful" not in format_bd("psnr_rgb", wide)


def test_bench_presets_and_qualities(tmp_path, tiny_model, monkeypatch):
    """--preset (several: a curve each) and --quality (a subset); the slow preset with the fitting cut short
    (the bench's own processes run the preset this one resolved); memory is each run's own process's peak."""
    from test_preset import TINY_SLOW

    from lfqcodec.presets import preset as presets

    monkeypatch.setitem(presets.PRESETS, "slow", TINY_SLOW)
    clip = write_clip(tmp_path / "clip.mkv", moving_pattern(5, 64, 64))
    result = CliRunner().invoke(main, ["bench", str(clip), "--frames", "5", "--gop", "5", "--model", str(tiny_model),
                                       "--preset", "medium,slow", "--quality", "high", "--quality", "low",
                                       "--json", str(tmp_path / "r.json"), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "r.json").read_text())
    ours = [(p["preset"], p["setting"]) for p in record["points"] if p["codec"] == "lfqcodec"]
    assert ours == [("medium", "low"), ("medium", "high"), ("slow", "low"), ("slow", "high")]
    assert record["settings"]["lfqcodec_presets"] == ["medium", "slow"]
    assert record["settings"]["lfqcodec_qualities"] == ["low", "high"]
    assert list(record["bd_rate_vs_x265"]) == ["clip.mkv", "clip.mkv (preset slow)"]
    assert "BD-rate of lfqcodec vs x265 on clip.mkv (preset slow)" in result.output
    assert "slow high" in result.output and "peak resident memory (RSS) of a fresh process" in result.output
    peaks = [p[key] for p in record["points"] for key in ("encode_peak_mib", "decode_peak_mib")]
    assert all(peak > 20 for peak in peaks), peaks  # a whole process each: never the 0 of a rise measured late
