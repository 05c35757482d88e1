"""Where the network runs, and the arithmetic settings that keep plain encoding's bits the same on every device.

:func:`deterministic` is called wherever a model is loaded (:func:`lfqcodec.model.checkpoint.load_model`)
or a device is chosen (:func:`select_device`, training): on CUDA it switches TensorFloat-32 off
for matrix products and cuDNN convolutions, which otherwise round fp32 inputs to 10-bit mantissas
on Ampere and later GPUs and would move many latents' signs away from the CPU's. What is left
after that (CUDA and CPU kernels summing in different orders) is described in docs/FORMAT.md,
"Determinism".
"""

from __future__ import annotations

import os

import torch

from ..base.errors import LfqError


def _has_precision_api() -> bool:
    """torch >= 2.9 has per-backend ``fp32_precision`` settings; mixing them with the legacy
    ``allow_tf32`` flags makes torch raise, so only one of the two is ever used."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    return hasattr(conv, "fp32_precision") and hasattr(torch.backends.cuda.matmul, "fp32_precision")


def deterministic() -> None:
    """Switch TF32 off for CUDA matrix products and cuDNN convolutions (and RNNs): full fp32.

    Cheap, idempotent, and harmless without CUDA (the settings are process-wide flags)."""
    if _has_precision_api():
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cudnn.rnn.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def tf32_enabled() -> bool:
    """Whether any CUDA fp32 matrix product or convolution may use TF32 now."""
    if _has_precision_api():
        return (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) != ("ieee", "ieee")
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


def select_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a CUDA device is an error. TF32 is
    switched off (:func:`deterministic`); on the CPU torch uses every core."""
    deterministic()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LfqError("--device cuda was asked for, but no CUDA device is available")
    elif device != "cpu":
        raise LfqError(f"unknown device {device!r} (use auto, cpu or cuda)")
    if device == "cpu" and os.cpu_count():
        torch.set_num_threads(os.cpu_count())
    return torch.device(device)
