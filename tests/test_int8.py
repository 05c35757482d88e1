"""int8 inference (lfqcodec.model.int8): calibration files, the auto choice, and that int8 stays within
rounding of float32 (bits near zero, pictures within 0.1 dB) while files stay valid."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import moving_pattern, tiny_tokenizer, write_clip

import lfqcodec
from lfqcodec.model import inference, int8
from lfqcodec.api import read_info
from lfqcodec.model.checkpoint import MODELS_DIR, load_model
from lfqcodec.cli.commands import main
from lfqcodec.model.inference import InferenceMode, choose_mode, cpu_flags, decode_bits, encode_latents, native_bf16, prepare_tokenizer
from lfqcodec.model.layers import streaming
from lfqcodec.base.metrics import psnr

SAMPLE = Path(__file__).parent / "data" / "carphone_33f.mp4"
FP32 = InferenceMode("fp32", True, "test")
INT8 = InferenceMode("int8", True, "test")


def _tiny_ranges(tokenizer) -> dict:
    """Ranges of a tiny tokenizer, recorded on random video."""
    recorder = int8.RangeRecorder(tokenizer)
    with torch.no_grad():
        video = torch.rand(1, 3, 9, 32, 48) * 2 - 1
        tokenizer.decode(tokenizer.encoder(video) > 0)
    recorder.close()
    return recorder.ranges()


@pytest.mark.parametrize(
    "flags, calibrated, expected",
    [
        ({"avx512f", "avx512_vnni"}, True, "int8"),  # this project's CPU
        ({"avx512f", "avx512_vnni"}, False, "fp32"),  # no calibration file for the model
        ({"avx2", "avx_vnni"}, True, "int8"),
        ({"amx_tile", "amx_int8", "amx_bf16"}, True, "int8"),
        ({"amx_tile", "amx_bf16", "avx512_bf16"}, False, "bf16"),
        ({"avx2"}, True, "fp32"),  # no int8 dot products
    ],
)
def test_auto_takes_int8_where_the_cpu_has_dot_products_and_the_model_is_calibrated(monkeypatch, flags, calibrated, expected):
    monkeypatch.setattr(inference, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(inference.platform, "machine", lambda: "x86_64")
    mode = choose_mode("auto", torch.device("cpu"), calibrated)
    assert mode.precision == expected and mode.reason.startswith("auto:")
    assert mode.dtype == torch.float32 or expected == "bf16"


@pytest.mark.parametrize(
    "flags, calibrated, expected",
    [
        ({"avx2", "fma"}, True, "int8"),  # AVX2 without dot products: the encoder only
        ({"avx2", "fma"}, False, "fp32"),  # no calibration file for the model
        ({"avx512f", "avx512_vnni"}, True, "int8"),
        ({"sse4_2"}, True, "fp32"),  # no AVX2
    ],
)
def test_auto_encoder_takes_int8_on_avx2(monkeypatch, flags, calibrated, expected):
    monkeypatch.setattr(inference, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(inference, "kernels_available", lambda: True)
    monkeypatch.setattr(inference.platform, "machine", lambda: "x86_64")
    mode = choose_mode("auto", torch.device("cpu"), calibrated, encoding=True)
    assert mode.precision == expected and mode.reason.startswith("auto:")
    assert choose_mode("fp32", torch.device("cpu"), calibrated, encoding=True).precision == "fp32"  # asked for
    if "avx2" in flags:  # the same flags read on an ARM machine mean nothing
        monkeypatch.setattr(inference.platform, "machine", lambda: "aarch64")
        assert choose_mode("auto", torch.device("cpu"), calibrated, encoding=True).precision in ("fp32", "bf16")


@pytest.mark.skipif(not int8.kernels_available(), reason="this torch has no x86 int8 kernels")
def test_codec_on_avx2_encodes_in_int8_and_decodes_in_fp32(monkeypatch, shipped, tmp_path):
    from lfqcodec.bench.suite import read_clip
    from lfqcodec.codec.chunks import Codec

    monkeypatch.setattr(inference, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(inference.platform, "machine", lambda: "x86_64")
    codec = Codec(shipped, torch.device("cpu"))
    assert (codec.encode_mode.precision, codec.mode.precision) == ("int8", "fp32")
    quantized = [isinstance(m, int8.Int8CausalConv3d) for m in codec.encoder.encoder.modules()]
    assert any(quantized) and not any(isinstance(m, int8.Int8CausalConv3d) for m in codec.tokenizer.modules())
    carphone = read_clip(SAMPLE, 5)[0]
    h, w = carphone.shape[1:3]
    report = lfqcodec.encode_frames(iter(carphone), tmp_path / "a.lfq", width=w, height=h, fps=Fraction(30),
                                    model=shipped, device="cpu")  # fmt: skip
    assert read_info(tmp_path / "a.lfq")["metadata"]["precision"] == "int8" and report.mode.startswith("int8")
    decoded = lfqcodec.decode_file(tmp_path / "a.lfq", tmp_path / "a.y4m", device="cpu", model=shipped)
    assert decoded.mode.startswith("fp32")


def test_int8_needs_a_calibration_and_the_cpu():
    with pytest.raises(lfqcodec.LfqError, match="calibrate-int8"):
        choose_mode("int8", torch.device("cpu"), calibrated=False)
    with pytest.raises(lfqcodec.LfqError, match="CPU only"):
        choose_mode("int8", torch.device("cuda"), calibrated=True)
    assert choose_mode("int8", torch.device("cpu"), calibrated=True).precision == "int8"


def test_int8_is_refused_where_torch_has_no_x86_int8_kernels(monkeypatch):
    monkeypatch.setattr(inference, "kernels_available", lambda: False)
    monkeypatch.setattr(int8, "kernels_available", lambda: False)
    with pytest.raises(lfqcodec.LfqError, match="int8 kernels"):
        choose_mode("int8", torch.device("cpu"), calibrated=True)
    monkeypatch.setattr(inference, "cpu_flags", lambda: frozenset({"avx512_vnni"}))
    assert choose_mode("auto", torch.device("cpu"), calibrated=True).precision == "fp32"


def test_calibration_file_is_bound_to_its_tokenizer(tmp_path):
    ranges = {"decoder.inp": (int8.Range(-1.0, 1.0), int8.Range(-3.5, 2.0))}
    path = int8.save_ranges(tmp_path / "m.int8", ranges, b"\x01" * 16, ["clip.mp4"])
    assert int8.load_ranges(path, b"\x01" * 16) == ranges
    assert int8.load_ranges(path, b"\x02" * 16) is None
    assert int8.find_calibration(b"\x01" * 16, None, tmp_path / "missing", tmp_path) == ranges
    (tmp_path / "bad.int8").write_text("{not json")
    assert int8.find_calibration(b"\x02" * 16, tmp_path) is None


def test_range_qparams_cover_the_range_and_zero():
    scale, zero = int8.Range(-0.3, 4.0).qparams()
    assert 0 < zero < 255 and abs(scale * 255 - 4.3) < 1e-9
    assert int8.Range(0.5, 2.0).qparams()[1] == 0  # zero included: the grid starts at 0
    assert int8.Range(-2.0, -1.0).qparams()[1] == 255


def test_int8_copy_keeps_the_ends_in_float_and_leaves_the_loaded_model_alone():
    tokenizer = tiny_tokenizer()
    prepared = prepare_tokenizer(tokenizer, INT8, _tiny_ranges(tokenizer))
    kinds = {name: type(layer).__name__ for name, layer in prepared.named_modules() if isinstance(layer, int8.CausalConv3d)}
    names = [name for name, _ in int8.int8_layers(tokenizer)]
    assert kinds[names[0]] == "CausalConv3d" and kinds[names[-1]] == "CausalConv3d"  # pixels in, pixels out
    assert sum(kind == "Int8CausalConv3d" for kind in kinds.values()) == len(names) - 2
    assert not any(isinstance(m, int8.Int8CausalConv3d) for m in tokenizer.modules())


@pytest.mark.skipif(not int8.int8_dot_products(cpu_flags())[0], reason="no int8 dot products on this CPU (AVX2's "
                    "u8 x s8 pairs saturate 16-bit sums): the error bound is for VNNI / AMX; --precision auto runs fp32 here")
def test_int8_streaming_equals_whole_clip_and_stays_near_float():
    tokenizer = tiny_tokenizer()
    fp32 = prepare_tokenizer(tokenizer, FP32)
    quantized = prepare_tokenizer(tokenizer, INT8, _tiny_ranges(tokenizer))
    video = torch.rand(1, 3, 17, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bits = encode_latents(fp32, video, True, FP32) > 0
    whole = decode_bits(quantized, bits, True, INT8)
    with streaming(quantized):
        streamed = [decode_bits(quantized, bits[:, :, :1], True, INT8)]
        streamed += [decode_bits(quantized, bits[:, :, lo : lo + 2], False, INT8) for lo in (1, 3)]
    torch.testing.assert_close(torch.cat(streamed, dim=2), whole, atol=1e-4, rtol=1e-4)
    reference = decode_bits(fp32, bits, True, FP32)
    # a random tiny network is far from the shipped one's statistics: only a loose bound here (the
    # shipped model's pictures are checked within 0.1 dB below)
    assert (whole - reference).abs().mean() < 0.1 * reference.abs().mean()


def test_int8_layers_follow_bias_updates_and_differentiate_in_float():
    tokenizer = tiny_tokenizer()
    quantized = prepare_tokenizer(tokenizer, INT8, _tiny_ranges(tokenizer))
    layer = next(m for m in quantized.modules() if isinstance(m, int8.Int8CausalConv3d))
    x = torch.randn(1, layer.conv.in_channels, 3, 8, 8).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        before = layer(x)
        layer.conv.bias.add_(0.5)  # as a decoder update does (lfqcodec.codec.adapt): in place
        after = layer(x)
    assert (after - before).mean().item() == pytest.approx(0.5, abs=0.05)
    y = layer(x.requires_grad_())  # the bit search and per-clip updates take gradients: float path
    y.sum().backward()
    assert x.grad is not None and layer.conv.weight.grad is not None


@pytest.fixture(scope="module")
def shipped():
    return load_model()


def test_shipped_model_has_a_calibration():
    assert int8.find_calibration(load_model().model_id, MODELS_DIR) is not None


def test_int8_bits_and_pictures_stay_near_fp32(tmp_path, shipped):
    from lfqcodec.bench.suite import read_clip

    carphone = read_clip(SAMPLE, 5)[0]
    h, w = carphone.shape[1:3]
    tokens, decoded = {}, {}
    for enc in ("fp32", "int8"):
        lfq = tmp_path / f"{enc}.lfq"
        lfqcodec.encode_frames(iter(carphone), lfq, width=w, height=h, fps=Fraction(30), model=shipped, device="cpu",
                               precision=enc)  # fmt: skip
        assert read_info(lfq)["metadata"]["precision"] == enc
        tokens[enc] = lfqcodec.read_tokens(lfq)
        for dec in ("fp32", "int8"):
            frames = np.stack(list(lfqcodec.decode_frames(lfq, device="cpu", model=shipped, precision=dec)))
            decoded[enc, dec] = psnr(torch.from_numpy(carphone), torch.from_numpy(frames))
    differing = np.bitwise_xor(tokens["fp32"].indices, tokens["int8"].indices).astype("<u8")
    flips = np.unpackbits(differing.view(np.uint8)).sum() / (differing.size * tokens["fp32"].bits)
    assert flips < 0.01  # measured on held-out clips: 0.25-0.36 %
    reference = decoded["fp32", "fp32"]
    assert all(abs(value - reference) < 0.1 for value in decoded.values()), decoded


def test_cli_calibrate_int8_then_encode_in_int8(tmp_path, tiny_model):
    model = tmp_path / "tiny.safetensors"
    shutil.copy(tiny_model, model)
    data = tmp_path / "data"
    data.mkdir()
    write_clip(data / "pattern.mkv", moving_pattern(9, 16, 24))
    runner = CliRunner()
    out = runner.invoke(main, ["calibrate-int8", "--model", str(model), "--data", str(data), "-q"])
    assert out.exit_code == 0, out.output
    assert model.with_suffix(".int8").is_file()
    src = write_clip(tmp_path / "in.mkv", moving_pattern(5, 16, 24, seed=1))
    out = runner.invoke(main, ["encode", str(src), str(tmp_path / "a.lfq"), "--model", str(model), "-q", "-v",
                               "--precision", "int8"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "network: int8" in out.output
    out = runner.invoke(main, ["decode", str(tmp_path / "a.lfq"), str(tmp_path / "a.mkv"), "--model", str(model), "-q"])
    assert out.exit_code == 0, out.output
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = runner.invoke(main, ["calibrate-int8", "--model", str(model), "--data", str(empty), "-q"])
    assert bad.exit_code != 0 and "no clip" in bad.output and "Traceback" not in bad.output
