"""Causal, tile-safe building blocks.

Tensors are ``N x C x T x H x W``. "Causal" means output frame ``t`` depends only on input frames
``<= t``: temporal padding is added on the past side only, and normalisation is computed per
position over channels (never over time or space), so encoding a clip in temporal pieces with
enough left context gives the same numbers as encoding it whole.

Every layer keeps the memory layout of its input: a tensor stored channels-last
(``torch.channels_last_3d``: N, T, H, W, C in memory, see :func:`is_channels_last`) stays so, which
lets inference (:mod:`lfqcodec.model.inference`) run the CPU's channels-last convolution kernels and one
fused ``layer_norm`` per normalisation, with no layout conversion between layers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` (``N x C x T x H x W``) is stored channels-last and not also channels-first
    (a tensor with one channel or one position is both; it takes the channels-first path)."""
    return x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)


def _layout_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last_3d if is_channels_last(x) else torch.contiguous_format


def _last(x: torch.Tensor) -> torch.Tensor:
    """``N x C x T x H x W`` -> ``N x T x H x W x C`` (a view; contiguous when ``x`` is channels-last)."""
    return x.permute(0, 2, 3, 4, 1)


def _first(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_last`."""
    return x.permute(0, 4, 1, 2, 3)


def cat(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
    """``torch.cat`` of ``N x C x T x H x W`` tensors that keeps a channels-last layout (torch.cat
    alone falls back to channels-first when a part has one frame)."""
    if not is_channels_last(parts[0]):
        return torch.cat(parts, dim)
    return _first(torch.cat([_last(part) for part in parts], dim=(0, 4, 1, 2, 3)[dim]))


def _direct_conv3d(x: torch.Tensor) -> bool:
    """Whether oneDNN's 3D convolution can take ``x`` as it is: inference on a channels-last CPU
    tensor. It beats the 2D formulation there by 10-50 % on wide layers and 2x on narrow ones
    (``benchmarks/results/speed_720p.json``), but ``F.conv3d`` sends narrow inputs to a slow
    non-oneDNN kernel, so it is called directly."""
    return (
        x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and x.dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available()
        and is_channels_last(x)
    )


class CausalConv3d(nn.Module):
    """3D convolution padded on the past in time (replicating the first frame) and zero-padded in space.

    In streaming mode (see :func:`streaming`) the layer keeps its last ``kt - 1`` input frames and
    uses them as the past of the next call, so a clip fed in temporal pieces gives the same output
    as the clip fed whole.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int] = (3, 3, 3)):
        super().__init__()
        kt, kh, kw = kernel
        self.time_pad = kt - 1
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, padding=(0, kh // 2, kw // 2))
        self.streaming = False
        self.past: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            # a list of first frames rather than an expanded view: torch.cat keeps the layout then
            past = [self.past] if self.past is not None else [x[:, :, :1]] * self.time_pad
            x = cat([*past, x], dim=2)
            if self.streaming:
                # a copy, so that the padded input is freed with this call
                self.past = x[:, :, -self.time_pad :].detach().clone(memory_format=torch.preserve_format)
        if _direct_conv3d(x):
            conv = self.conv
            return torch.ops.aten.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, 1)
        return self._conv_as_2d(x)

    def _conv_as_2d(self, x: torch.Tensor) -> torch.Tensor:
        """The (unpadded-in-time) 3D convolution computed as one 2D convolution over all output
        frames, with the ``kt`` input frames of each stacked into channels: the same sums, but
        CPU conv3d kernels are several times slower than conv2d ones (256x256 decoding went from
        12.5 to 32 fps: ``benchmarks/speed_memory.py``, before and after this change)."""
        kt = self.conv.kernel_size[0]
        n, c, t, h, w = x.shape
        frames_out = t - kt + 1
        stacked = x if kt == 1 else cat([x[:, :, i : i + frames_out] for i in range(kt)], dim=1)
        stacked = stacked.transpose(1, 2).reshape(n * frames_out, kt * c, h, w)
        weight = self.conv.weight.transpose(1, 2).reshape(self.conv.out_channels, kt * c, *self.conv.kernel_size[1:])
        y = F.conv2d(stacked, weight, self.conv.bias, padding=self.conv.padding[1:])
        # channels-last in, channels-last out: then every reshape above and this transpose are views
        return y.view(n, frames_out, -1, *y.shape[-2:]).transpose(1, 2).contiguous(memory_format=_layout_of(x))


class PointwiseConv3d(nn.Conv3d):
    """A ``1 x 1 x 1`` :class:`torch.nn.Conv3d` (same parameters) that keeps a channels-last input
    channels-last: there it is one matrix product over channels."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last(x):
            return _first(F.linear(_last(x), self.weight.flatten(1), self.bias))
        return super().forward(x)


@contextlib.contextmanager
def streaming(module: nn.Module) -> Iterator[None]:
    """Within this block, the causal convolutions of ``module`` carry their past between calls."""
    layers = [m for m in module.modules() if isinstance(m, CausalConv3d)]
    for layer in layers:
        layer.streaming, layer.past = True, None
    try:
        yield
    finally:
        for layer in layers:
            layer.streaming, layer.past = False, None


class ChannelNorm(nn.Module):
    """LayerNorm over channels at every (t, h, w) position: causal and independent of tiling."""

    def __init__(self, channels: int, affine: bool = True, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last(x):  # channels are the innermost axis: one fused kernel
            return _first(F.layer_norm(_last(x), (x.shape[1],), self.weight, self.bias, self.eps))
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            x = x * self.weight.view(1, -1, 1, 1, 1) + self.bias.view(1, -1, 1, 1, 1)
        return x


class ResBlock(nn.Module):
    """Pre-norm residual block of two causal 3D convolutions."""

    def __init__(self, channels: int, temporal_kernel: int = 3):
        super().__init__()
        kernel = (temporal_kernel, 3, 3)
        self.norm1 = ChannelNorm(channels)
        self.conv1 = CausalConv3d(channels, channels, kernel)
        self.norm2 = ChannelNorm(channels)
        self.conv2 = CausalConv3d(channels, channels, kernel)
        nn.init.zeros_(self.conv2.conv.weight)  # start as identity: stable early training
        nn.init.zeros_(self.conv2.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


def space_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``N x C x T x H x W`` -> ``N x C*f*f x T x H/f x W/f`` (channel order: c, dy, dx)."""
    n, c, t, h, w = x.shape
    if is_channels_last(x):
        y = _last(x).reshape(n, t, h // factor, factor, w // factor, factor, c).permute(0, 1, 2, 4, 6, 3, 5)
        return _first(y.reshape(n, t, h // factor, w // factor, c * factor * factor))
    x = x.view(n, c, t, h // factor, factor, w // factor, factor)
    x = x.permute(0, 1, 4, 6, 2, 3, 5)
    return x.reshape(n, c * factor * factor, t, h // factor, w // factor)


def depth_to_space(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`."""
    n, c, t, h, w = x.shape
    c_out = c // (factor * factor)
    if is_channels_last(x):
        y = _last(x).reshape(n, t, h, w, c_out, factor, factor).permute(0, 1, 2, 5, 3, 6, 4)
        return _first(y.reshape(n, t, h * factor, w * factor, c_out))
    x = x.view(n, c_out, factor, factor, t, h, w)
    x = x.permute(0, 1, 4, 5, 2, 6, 3)
    return x.reshape(n, c_out, t, h * factor, w * factor)


def time_to_depth(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``N x C x T x H x W`` -> ``N x C*f x T/f x H x W`` (channel order: c, dt)."""
    n, c, t, h, w = x.shape
    if is_channels_last(x):
        y = _last(x).reshape(n, t // factor, factor, h, w, c).permute(0, 1, 3, 4, 5, 2)
        return _first(y.reshape(n, t // factor, h, w, c * factor))
    x = x.view(n, c, t // factor, factor, h, w).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, c * factor, t // factor, h, w)


def depth_to_time(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of :func:`time_to_depth`."""
    n, c, t, h, w = x.shape
    if is_channels_last(x):
        y = _last(x).reshape(n, t, h, w, c // factor, factor).permute(0, 1, 5, 2, 3, 4)
        return _first(y.reshape(n, t * factor, h, w, c // factor))
    x = x.view(n, c // factor, factor, t, h, w).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, c // factor, t * factor, h, w)
