"""Precision and layout choices of lfqcodec.model.inference: same network, same files, bits differ only near zero."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import moving_pattern, tiny_tokenizer, write_clip

import lfqcodec
from lfqcodec.model import inference
from lfqcodec.api import read_info
from lfqcodec.model.checkpoint import load_model
from lfqcodec.cli.commands import main
from lfqcodec.model.inference import InferenceMode, choose_mode, cpu_flags, decode_bits, encode_latents, native_bf16, prepare_tokenizer
from lfqcodec.model.layers import (
    depth_to_space, depth_to_time, is_channels_last, space_to_depth, streaming, time_to_depth,
)
from lfqcodec.base.metrics import psnr

SAMPLE = Path(__file__).parent / "data" / "carphone_33f.mp4"
FP32_CL = InferenceMode("fp32", True, "test")
FP32_FIRST = InferenceMode("fp32", False, "test")


# The bf16 bounds below were measured where oneDNN runs bf16 natively or emulates it with AVX512; its
# AVX2 emulation rounds differently (more bits flip), and --precision auto never picks bf16 there.
BF16_AS_MEASURED = native_bf16(torch.device("cpu"))[0] or torch.backends.cpu.get_cpu_capability().startswith("AVX512")
needs_avx512_bf16 = pytest.mark.skipif(not BF16_AS_MEASURED, reason="bf16 on an AVX2-only CPU: emulated with "
                                       "other rounding than the bounds describe; --precision auto runs fp32 here")


@pytest.mark.parametrize(
    "flags, machine, expected",
    [
        ({"avx512f", "avx512bw", "avx512_vnni"}, "x86_64", "fp32"),  # this project's CPU: oneDNN emulates bf16
        ({"avx512f", "avx512_bf16"}, "x86_64", "bf16"),
        ({"avx512f", "amx_tile", "amx_bf16"}, "x86_64", "bf16"),
        (set(), "x86_64", "fp32"),  # no /proc/cpuinfo
        ({"fp", "asimd", "bf16"}, "aarch64", "bf16"),
        ({"fp", "asimd"}, "aarch64", "fp32"),
    ],
)

def test_auto_precision_follows_the_cpu_flags(monkeypatch, flags, machine, expected):
    monkeypatch.setattr(inference, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(inference.platform, "machine", lambda: machine)
    # oneDNN's own probe says yes on plain AVX512 too: it must not decide
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    mode = choose_mode("auto", torch.device("cpu"))
    assert mode.precision == expected and mode.channels_last and mode.reason.startswith("auto:")
    assert choose_mode("fp32", torch.device("cpu")).precision == "fp32"
    assert choose_mode("bf16", torch.device("cpu")).precision == "bf16"


def test_bf16_where_onednn_cannot_run_it_is_a_one_line_refusal(monkeypatch):
    monkeypatch.setattr(inference.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    with pytest.raises(lfqcodec.LfqError, match="bf16 needs a CPU with AVX512"):
        choose_mode("bf16", torch.device("cpu"))
    assert choose_mode("auto", torch.device("cpu")).precision != "bf16"


def test_unknown_precision_is_an_error():
    with pytest.raises(lfqcodec.LfqError, match="unknown precision"):
        choose_mode("fp8", torch.device("cpu"))


@pytest.mark.parametrize("fn", [space_to_depth, depth_to_space, time_to_depth, depth_to_time])
def test_rearrangements_keep_the_layout_and_the_numbers(fn):
    x = torch.randn(2, 8, 4, 6, 10)
    channels_last = x.contiguous(memory_format=torch.channels_last_3d)
    out = fn(channels_last, 2)
    assert torch.equal(out, fn(x, 2)) and is_channels_last(out)


def test_channels_last_network_matches_the_channels_first_one():
    tokenizer = tiny_tokenizer()
    video = torch.rand(1, 3, 9, 32, 48) * 2 - 1
    with torch.no_grad():
        latents = tokenizer.encoder(video)
        decoded = tokenizer.decode(latents > 0)
    prepared = prepare_tokenizer(tokenizer, FP32_CL)
    latents_cl = encode_latents(prepared, video, True, FP32_CL)
    decoded_cl = decode_bits(prepared, latents > 0, True, FP32_CL)
    assert is_channels_last(decoded_cl)
    torch.testing.assert_close(latents_cl, latents, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(decoded_cl, decoded, atol=1e-4, rtol=1e-4)
    # the prepared network still runs channels-first inputs the old way, exactly
    assert torch.equal(decode_bits(prepared, latents > 0, True, FP32_FIRST), decoded)


def test_channels_last_streaming_equals_whole_clip():
    tokenizer = prepare_tokenizer(tiny_tokenizer(), FP32_CL)
    video = torch.rand(1, 3, 17, 16, 24) * 2 - 1
    whole = encode_latents(tokenizer, video, True, FP32_CL)
    with streaming(tokenizer):
        parts = [encode_latents(tokenizer, video[:, :, :1], True, FP32_CL)]
        parts += [encode_latents(tokenizer, video[:, :, lo : lo + 8], False, FP32_CL) for lo in (1, 9)]
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, atol=1e-4, rtol=1e-4)
    bits = whole > 0
    decoded = decode_bits(tokenizer, bits, True, FP32_CL)
    with streaming(tokenizer):
        streamed = [decode_bits(tokenizer, bits[:, :, :1], True, FP32_CL)]
        streamed += [decode_bits(tokenizer, bits[:, :, lo : lo + 2], False, FP32_CL) for lo in (1, 3)]
    torch.testing.assert_close(torch.cat(streamed, dim=2), decoded, atol=1e-4, rtol=1e-4)


def test_bf16_copy_leaves_the_loaded_model_in_fp32():
    tokenizer = tiny_tokenizer()
    prepared = prepare_tokenizer(tokenizer, InferenceMode("bf16", True, "test"))
    assert next(prepared.parameters()).dtype == torch.bfloat16
    assert next(tokenizer.parameters()).dtype == torch.float32
    assert prepare_tokenizer(tokenizer, FP32_CL) is tokenizer


@pytest.fixture(scope="module")
def shipped():
    return load_model()


@pytest.fixture(scope="module")
def carphone() -> np.ndarray:
    from lfqcodec.bench.suite import read_clip

    return read_clip(SAMPLE, 9)[0]


@needs_avx512_bf16
def test_bf16_bits_differ_from_fp32_only_near_zero(shipped, carphone):
    video = torch.from_numpy(carphone).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    video = video[..., :144, :176]
    keep = shipped.config.quality_bits["medium"]
    fp32 = encode_latents(prepare_tokenizer(shipped.tokenizer, FP32_CL), video, True, FP32_CL)[:, :keep]
    bf16_mode = InferenceMode("bf16", True, "test")
    bf16 = encode_latents(prepare_tokenizer(shipped.tokenizer, bf16_mode), video, True, bf16_mode)[:, :keep]
    flips = (fp32 > 0) != (bf16 > 0)
    assert flips.float().mean() < 0.01  # measured: 0.12 % on this clip
    # latents are RMS-normalised (typical |z| ~ 0.8): a flipped bit's fp32 latent is within bf16 rounding of 0
    assert flips.sum() == 0 or fp32.abs()[flips].max() < 0.1


@needs_avx512_bf16
def test_bf16_and_fp32_files_are_valid_and_decode_alike(tmp_path, shipped, carphone):
    carphone = carphone[:5]
    h, w = carphone.shape[1:3]
    decoded = {}
    for enc in ("fp32", "bf16"):
        lfq = tmp_path / f"{enc}.lfq"
        lfqcodec.encode_frames(iter(carphone), lfq, width=w, height=h, fps=Fraction(30), model=shipped, device="cpu",
                               precision=enc)  # fmt: skip
        assert read_info(lfq)["metadata"]["precision"] == enc
        for dec in ("fp32", "bf16"):
            frames = np.stack(list(lfqcodec.decode_frames(lfq, device="cpu", model=shipped, precision=dec)))
            assert frames.shape == carphone.shape
            decoded[enc, dec] = psnr(torch.from_numpy(carphone), torch.from_numpy(frames))
    reference = decoded["fp32", "fp32"]
    assert all(abs(value - reference) < 0.1 for value in decoded.values()), decoded


def test_cli_precision_and_verbose(tmp_path, tiny_model):
    src = write_clip(tmp_path / "in.mkv", moving_pattern(5, 16, 24))
    runner = CliRunner()
    out = runner.invoke(main, ["encode", str(src), str(tmp_path / "a.lfq"), "--model", str(tiny_model), "-q", "-v",
                               "--precision", "fp32"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "network: fp32, channels-last (asked for)" in out.output
    info = runner.invoke(main, ["info", str(tmp_path / "a.lfq")])
    assert "encoder:     lfqcodec" in info.output and ", fp32" in info.output
    out = runner.invoke(main, ["decode", str(tmp_path / "a.lfq"), str(tmp_path / "a.mkv"), "--model", str(tiny_model),
                               "-q", "--verbose"])  # fmt: skip
    assert out.exit_code == 0 and "network: " in out.output
    bad = runner.invoke(main, ["decode", str(tmp_path / "a.lfq"), str(tmp_path / "b.mkv"), "--precision", "fp8"])
    assert bad.exit_code != 0 and "fp8" in bad.output
