"""int8 inference of the causal 3D convolutions on CPUs with int8 dot products (AVX512-VNNI,
AVX-VNNI, AMX): ``--precision int8``.

Each :class:`~lfqcodec.model.layers.CausalConv3d` with a spatial kernel becomes an
:class:`Int8CausalConv3d`: its input is quantized to 8 bits with a fixed (calibrated) scale, the
convolution runs on fbgemm's int8 kernels with weights quantized per output channel, and its
output comes back through a second fixed (calibrated) uint8 range, dequantized to float32 for the
normalisations, activations and residual sums, which stay in float32. Everything else (1x1 convolutions, norms) is untouched.

The scales come from a **calibration file** (``models/<tokenizer>.int8``, safetensors, bound to
the tokenizer's id): for every such layer, the range of its input and of its output measured over
real clips by :func:`lfqcodec.training.calibrate.calibrate` (``lfqcodec calibrate-int8``). Static ranges keep
the arithmetic
independent of the frame being coded, so tiled and whole-frame decoding, and any thread count,
give the same numbers up to summation order.

The file format does not depend on it: a decoder in int8 reads every file, and an encoder in int8
writes valid files whose bits differ from float32 ones where the latent is near zero (measured by
``benchmarks/speed_720p.py``, which also reports the PSNR change).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .layers import CausalConv3d, cat

SUFFIX = ".int8"
FORMAT = "int8-calibration-v1"
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo flags of CPUs with int8 dot products
_QMAX = 255  # quint8 activations


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def qparams(self) -> tuple[float, int]:
        """Affine uint8 parameters ``(scale, zero_point)`` covering ``low .. high`` (and 0)."""
        low, high = min(self.low, 0.0), max(self.high, 0.0)
        scale = max(high - low, 1e-6) / _QMAX
        return scale, int(min(max(round(-low / scale), 0), _QMAX))


def kernels_available() -> bool:
    """Whether this torch build has the x86 int8 convolution kernels (fbgemm / oneDNN)."""
    return "x86" in torch.backends.quantized.supported_engines


def _engine() -> None:
    if torch.backends.quantized.engine != "x86" and "x86" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "x86"


class Int8CausalConv3d(CausalConv3d):
    """A :class:`~lfqcodec.model.layers.CausalConv3d` computed in int8 with static activation ranges. The
    temporal padding and streaming past are as in the float layer (the past is kept in float32)."""

    def __init__(self, layer: CausalConv3d, x_range: Range, y_range: Range):
        nn.Module.__init__(self)  # the float layer's own attributes, not a fresh convolution
        conv = layer.conv
        _engine()
        self.time_pad = layer.time_pad
        self.conv = conv  # float weights stay for gradients, state_dict and probes; int8 ones below
        self.streaming, self.past = layer.streaming, layer.past
        self.x_scale, self.x_zero = x_range.qparams()
        weight = conv.weight.detach().float()
        w_scale = weight.abs().amax(dim=(1, 2, 3, 4)).clamp_min(1e-8) / 127
        with warnings.catch_warnings():  # torch marks its quantized-tensor API deprecated; 2.13 has it
            warnings.simplefilter("ignore")
            q_weight = torch.quantize_per_channel(weight, w_scale.double(), torch.zeros_like(w_scale, dtype=torch.long), 0, torch.qint8)
            self.qconv = torch.ao.nn.quantized.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
            self.qconv.set_weight_bias(q_weight, None if conv.bias is None else conv.bias.detach().float())
        self.qconv.scale, self.qconv.zero_point = y_range.qparams()
        self._q_weight = q_weight
        self._bias_version = self._version_of_bias()

    def _version_of_bias(self) -> int:
        return -1 if self.conv.bias is None else self.conv.bias._version

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # bit search and per-clip updates differentiate: the float layer
            return super().forward(x)
        if self._version_of_bias() != self._bias_version:  # a decoder update changed the bias in place
            self.qconv.set_weight_bias(self._q_weight, self.conv.bias.detach().float())
            self._bias_version = self._version_of_bias()
        if self.time_pad:
            past = [self.past] if self.past is not None else [x[:, :, :1]] * self.time_pad
            x = cat([*past, x], dim=2)
            if self.streaming:
                self.past = x[:, :, -self.time_pad :].detach().clone(memory_format=torch.preserve_format)
        q = torch.quantize_per_tensor(x.float(), self.x_scale, self.x_zero, torch.quint8)
        return self.qconv(q).dequantize()


def int8_layers(module: nn.Module) -> list[tuple[str, CausalConv3d]]:
    """The layers that run in int8: causal convolutions with a spatial kernel, by name."""
    return [
        (name, layer)
        for name, layer in module.named_modules()
        if type(layer) is CausalConv3d and layer.conv.kernel_size[1:] != (1, 1)
    ]


def quantize_tokenizer(tokenizer: nn.Module, ranges: dict[str, tuple[Range, Range]]) -> int:
    """Replace the tokenizer's int8-able layers in place by :class:`Int8CausalConv3d` with
    ``ranges`` (``name -> (input range, output range)``, names from the tokenizer); returns how many
    were replaced. The encoder's first layer (it reads pixels, whose 256 levels an affine uint8 grid
    over ``-1 .. 1`` does not hit exactly) and the decoder's last (it writes pixels) stay float32, as
    does any layer without a range."""
    names = [name for name, _ in int8_layers(tokenizer)]
    kept = {next((n for n in names if n.startswith("encoder.")), None), next((n for n in reversed(names) if n.startswith("decoder.")), None)}
    count = 0
    for name, layer in int8_layers(tokenizer):
        if name not in ranges or name in kept:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = tokenizer.get_submodule(parent_name) if parent_name else tokenizer
        setattr(parent, child, Int8CausalConv3d(layer, *ranges[name]))
        count += 1
    return count


class RangeRecorder:
    """Records the range of every int8-able layer's input and output while
    the float model runs. Ranges are quantiles of the values (``quantile``, and ``1 - quantile``)
    averaged over calls, so one outlier pixel does not spend the 8 bits."""

    def __init__(self, module: nn.Module, quantile: float = 1e-4):
        self.quantile = quantile
        self.seen: dict[str, list[tuple[float, float, float, float]]] = {}
        self.handles = []
        for name, layer in int8_layers(module):
            self.handles.append(layer.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(_module, inputs, output):
            self.seen.setdefault(name, []).append((*self._bounds(inputs[0]), *self._bounds(output)))

        return hook

    def _bounds(self, x: torch.Tensor) -> tuple[float, float]:
        flat = x.detach().float().reshape(-1)
        if flat.numel() > 1 << 18:  # quantiles of a strided subsample (speed)
            flat = flat[:: flat.numel() // (1 << 18) + 1]
        low, high = torch.quantile(flat, torch.tensor([self.quantile, 1 - self.quantile])).tolist()
        return low, high

    def ranges(self) -> dict[str, tuple[Range, Range]]:
        out = {}
        for name, rows in self.seen.items():
            values = torch.tensor(rows, dtype=torch.float64)
            lo_x, hi_x, lo_y, hi_y = values.min(0).values[0], values.max(0).values[1], values.min(0).values[2], values.max(0).values[3]
            out[name] = (Range(float(lo_x), float(hi_x)), Range(float(lo_y), float(hi_y)))
        return out

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def save_ranges(path: str | Path, ranges: dict[str, tuple[Range, Range]], tokenizer_id: bytes, clips: Iterable[str]) -> Path:
    """Write a calibration file (JSON; FORMAT, the tokenizer id, the clips, the ranges)."""
    from ..base.atomic import atomic_output

    path = Path(path)
    body = {
        "format": FORMAT,
        "tokenizer_id": tokenizer_id.hex(),
        "clips": list(clips),
        "ranges": {name: [[x.low, x.high], [y.low, y.high]] for name, (x, y) in sorted(ranges.items())},
    }
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(body, indent=1) + "\n")
    return path


def load_ranges(path: str | Path, tokenizer_id: bytes) -> dict[str, tuple[Range, Range]] | None:
    """The ranges in ``path`` if it is a calibration file for ``tokenizer_id``, else ``None``."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("format") != FORMAT or body.get("tokenizer_id") != tokenizer_id.hex():
        return None
    try:
        return {
            str(name): (Range(float(x[0]), float(x[1])), Range(float(y[0]), float(y[1])))
            for name, (x, y) in body["ranges"].items()
        }
    except (KeyError, TypeError, ValueError):
        return None


def find_calibration(tokenizer_id: bytes, *folders: Path | None) -> dict[str, tuple[Range, Range]] | None:
    """The ranges of the first calibration file in ``folders`` made for this tokenizer, or ``None``."""
    for folder in folders:
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            ranges = load_ranges(path, tokenizer_id)
            if ranges is not None:
                return ranges
    return None


def int8_dot_products(flags: Iterable[str]) -> tuple[bool, str]:
    """Whether a CPU with these ``/proc/cpuinfo`` flags has int8 dot products, and the evidence."""
    found = [flag for flag in VNNI_FLAGS if flag in set(flags)]
    if found and not kernels_available():
        return False, f"CPU has {', '.join(found)} but this torch build has no x86 int8 kernels"
    if found:
        return True, f"CPU has {', '.join(found)}"
    return False, f"CPU has none of {', '.join(VNNI_FLAGS)}"
