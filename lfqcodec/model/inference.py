"""How the network runs when coding: number precision and memory layout.

Precision (``--precision``):

=========  ===========================================================================================
``fp32``   float32 everywhere: the reference (the bitstream of docs/FORMAT.md is defined in fp32).
``bf16``   bfloat16 weights and activations (oneDNN accumulates in fp32). Fast where the CPU has
           native bf16 (AMX, AVX512-BF16) or on CUDA; elsewhere oneDNN emulates it, about 2.5x slower
           than fp32 on an AVX512 Xeon without it (``benchmarks/results/speed_720p.json``).
``int8``   the causal 3D convolutions in int8 with calibrated activation ranges (:mod:`lfqcodec.model.int8`),
           the rest in float32. About 2x faster than fp32 at 720p on an AVX512-VNNI Xeon, PSNR within
           0.03 dB (``benchmarks/results/speed_720p-int8.json``). CPU only; needs the model's
           calibration file (``models/<name>.int8``, ``lfqcodec calibrate-int8``).
``auto``   on the CPU: int8 where it has int8 dot products (VNNI, AMX) and the model has a
           calibration file, else bf16 where it computes bf16 natively (:func:`native_bf16`), else
           fp32; on AVX2 without dot products the encoder alone runs int8 (its output is signs:
           1.34-1.45x faster, PSNR within 0.03 dB) and the decoder fp32. On CUDA: bf16 where
           supported, else fp32.
=========  ===========================================================================================

The layout: on the CPU, activations are kept channels-last (``torch.channels_last_3d``, N, T, H, W, C
in memory; every layer of :mod:`lfqcodec.model.layers` keeps its input's layout), which runs oneDNN's
channels-last convolutions with no reorders, each normalisation as one fused ``layer_norm`` and the
1x1 convolutions as matrix products (:func:`prepare_tokenizer` turns the network's plain ``1 x 1 x 1``
``nn.Conv3d`` layers into :class:`~lfqcodec.model.layers.PointwiseConv3d`, same weights, so that the
network's definition needs nothing for it).

Neither choice changes the file format. Signs of latents within rounding of zero may differ between
them (measured in ``benchmarks/results/speed_720p.json``); the decoder's output differs by rounding.
"""

from __future__ import annotations

import copy
import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from torch import nn

from ..base.errors import LfqError
from .int8 import int8_dot_products, kernels_available, quantize_tokenizer
from .layers import PointwiseConv3d
from .quantizer import decoder_codes
from .tokenizer import TokenizerNet

PRECISIONS = ("auto", "bf16", "fp32", "int8")
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that compute bf16 natively
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}  # int8: of the activations


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (Linux); empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and the evidence. On the CPU this reads the CPU's
    flags: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` also says yes on plain AVX512 (oneDNN
    emulates bf16 there, slower than fp32), so it cannot decide."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, f"CUDA device {'with' if ok else 'without'} bf16"
    if platform.machine().lower() in ("arm64", "aarch64"):
        flags = cpu_flags()
        ok = "bf16" in flags
        return ok, f"CPU {'with' if ok else 'without'} the bf16 flag"
    found = [flag for flag in NATIVE_BF16_FLAGS if flag in cpu_flags()]
    if found:
        return True, f"CPU has {', '.join(found)}"
    return False, f"CPU has none of {', '.join(NATIVE_BF16_FLAGS)} (capability {torch.backends.cpu.get_cpu_capability()})"


def _onednn_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions on this x86 CPU at all (natively or emulated): without it
    they fail inside torch."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else True
    except RuntimeError:
        return True


@dataclass(frozen=True)
class InferenceMode:
    """What runs: ``precision`` is ``fp32``, ``bf16`` or ``int8`` (never ``auto``)."""

    precision: str
    channels_last: bool
    reason: str  # why this precision (for --verbose output and the benchmark)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.precision]

    def describe(self) -> str:
        return f"{self.precision}{', channels-last' if self.channels_last else ''} ({self.reason})"

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (``N x C x T x H x W``) in this mode's dtype and memory layout."""
        x = x.to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last_3d if self.channels_last else torch.contiguous_format)


def choose_mode(precision: str, device: torch.device, calibrated: bool = False, encoding: bool = False) -> InferenceMode:
    """Resolve ``precision`` (one of :data:`PRECISIONS`) for ``device``; ``calibrated``: whether the
    model has int8 ranges (:func:`lfqcodec.model.int8.find_calibration`); ``encoding``: the mode is
    for the encoder, whose output is only signs (``auto`` may then take int8 on AVX2, see
    :func:`int8_encoder_without_dot_products`)."""
    if precision not in PRECISIONS:
        raise LfqError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    channels_last = device.type == "cpu"
    if precision == "int8":
        if device.type != "cpu":
            raise LfqError("--precision int8 runs on the CPU only (use --device cpu, or bf16 / fp32 on CUDA)")
        if not kernels_available():
            raise LfqError("--precision int8 needs torch's x86 int8 kernels, which this machine's torch lacks (use fp32)")
        if not calibrated:
            raise LfqError("--precision int8 needs the model's int8 calibration (models/<name>.int8): run lfqcodec calibrate-int8")
        return InferenceMode("int8", channels_last, f"asked for; {int8_dot_products(cpu_flags())[1]}")
    if precision == "bf16" and device.type == "cpu" and platform.machine().lower() not in ("arm64", "aarch64"):
        if not _onednn_bf16():
            raise LfqError("--precision bf16 needs a CPU with AVX512 (BW, VL, DQ), AVX-NE-CONVERT or AMX, or CUDA; "
                           f"this one has none (capability {torch.backends.cpu.get_cpu_capability()}): use auto or fp32")  # fmt: skip
    if precision == "auto":
        if device.type == "cpu":
            fast_int8, why_int8 = int8_dot_products(cpu_flags())
            if fast_int8 and calibrated:
                return InferenceMode("int8", channels_last, f"auto: {why_int8} and the model is calibrated")
            if encoding and calibrated and int8_encoder_without_dot_products(cpu_flags()):
                return InferenceMode("int8", channels_last, "auto: encoder on AVX2 without int8 dot products, where "
                                     "int8 kernels still code the signs faster than fp32")  # fmt: skip
        native, why = native_bf16(device)
        return InferenceMode("bf16" if native else "fp32", channels_last, f"auto: {why}")
    return InferenceMode(precision, channels_last, "asked for")


def int8_encoder_without_dot_products(flags: frozenset[str]) -> bool:
    """Whether ``auto`` runs the *encoder* in int8 on a CPU without int8 dot products: on AVX2 the
    int8 kernels (u8 x s8 pairs into 16-bit sums) encoded 1.34x (720p) to 1.45x (540p) faster than
    fp32, with the same PSNR on the held-out clips, because the encoder's output is only signs; the
    decoder, whose output is pixels, gained nothing there and stays fp32
    (``benchmarks/results/speed/speed_sizes-avx2-int8.json``, ``precision-avx2-int8.json``)."""
    return "avx2" in flags and kernels_available() and platform.machine() in ("x86_64", "AMD64")


def prepare_tokenizer(tokenizer: TokenizerNet, mode: InferenceMode, int8_ranges: dict | None = None) -> TokenizerNet:
    """``tokenizer`` ready to run in ``mode``: itself in fp32, a converted copy otherwise (the
    loaded model stays fp32 for other users; in int8 the copy's causal convolutions are
    :class:`~lfqcodec.model.int8.Int8CausalConv3d` with ``int8_ranges``). Its ``1 x 1 x 1`` convolutions
    become :class:`~lfqcodec.model.layers.PointwiseConv3d` in place: same parameters and, on
    channels-first inputs, the same computation."""
    for module in tokenizer.modules():
        if type(module) is nn.Conv3d and _is_pointwise(module):
            module.__class__ = PointwiseConv3d
    if mode.precision == "int8":
        quantized = copy.deepcopy(tokenizer).float().eval()
        quantize_tokenizer(quantized, int8_ranges or {})
        return quantized
    if mode.dtype == next(tokenizer.parameters()).dtype:
        return tokenizer.eval()
    return copy.deepcopy(tokenizer).to(mode.dtype).eval()


def _is_pointwise(conv: nn.Conv3d) -> bool:
    return (
        conv.kernel_size == (1, 1, 1)
        and conv.stride == (1, 1, 1)
        and conv.padding == (0, 0, 0)
        and conv.dilation == (1, 1, 1)
        and conv.groups == 1
    )


def encode_latents(tokenizer: TokenizerNet, video: torch.Tensor, first: bool, mode: InferenceMode) -> torch.Tensor:
    """Video ``N x 3 x T x H x W`` in [-1, 1] -> latents ``N x B x T' x h x w`` (fp32; bits are ``> 0``)."""
    with torch.no_grad():
        return tokenizer.encoder(mode.layout(video), first).float()


def decode_bits(tokenizer: TokenizerNet, bits: torch.Tensor, first: bool, mode: InferenceMode) -> torch.Tensor:
    """Bool bits ``N x b x T' x h x w`` -> video ``N x 3 x T x H x W`` in [-1, 1] (not clamped,
    in ``mode``'s dtype and layout); see :meth:`lfqcodec.model.tokenizer.TokenizerNet.decode`."""
    with torch.no_grad():
        codes = decoder_codes(bits, tokenizer.cfg.num_bits, tokenizer.cfg.residual_bits, dim=1)
        return tokenizer.decoder(mode.layout(codes), first)
