"""Distortion metrics on RGB frames: PSNR and (MS-)SSIM.

Frames are torch tensors ``... x 3 x H x W`` (any leading dims) with values in ``[0, data_range]``.
MS-SSIM follows Wang et al. (2003): Gaussian window 11, sigma 1.5, five scales with the standard
weights; frames too small for five scales use as many as fit (at least 11 px at the coarsest),
with the weights renormalised, and say so through :func:`ms_ssim_scales`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(reference: torch.Tensor, distorted: torch.Tensor, data_range: float = 255.0) -> float:
    """PSNR in dB over all elements; ``inf`` for identical inputs."""
    mse = (reference.double() - distorted.double()).pow(2).mean().item()
    if mse == 0:
        return math.inf
    return 10 * math.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    x = F.conv2d(x, window, groups=c)
    return F.conv2d(x, window.transpose(2, 3), groups=c)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, data_range: float, window: torch.Tensor):
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    sxx = _blur(x * x, window) - mu_x**2
    syy = _blur(y * y, window) - mu_y**2
    sxy = _blur(x * y, window) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0, window_size: int = 11) -> torch.Tensor:
    """Mean single-scale SSIM per image, differentiable (used as a training loss too)."""
    x, y = x.reshape(-1, *x.shape[-3:]), y.reshape(-1, *y.shape[-3:])
    window = _gaussian_window(window_size, 1.5, x.shape[1], x.device, x.dtype)
    return _ssim_terms(x, y, data_range, window)[0]


def ms_ssim_scales(height: int, width: int, window_size: int = 11) -> int:
    """How many MS-SSIM scales (1..5) frames of this size allow."""
    smallest = min(height, width)
    scales = 1
    while scales < 5 and smallest // 2**scales >= window_size:
        scales += 1
    return scales


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 255.0) -> float:
    """Mean MS-SSIM over all frames of ``x`` against ``y``; 1.0 for identical inputs."""
    x = x.reshape(-1, *x.shape[-3:]).double()
    y = y.reshape(-1, *y.shape[-3:]).double()
    window_size = min(11, x.shape[-1], x.shape[-2])
    scales = ms_ssim_scales(x.shape[-2], x.shape[-1], window_size)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    window = _gaussian_window(window_size, 1.5, x.shape[1], x.device, x.dtype)
    values = []
    for scale in range(scales):
        s, cs = _ssim_terms(x, y, data_range, window)
        values.append(s if scale == scales - 1 else cs)
        if scale < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values, dim=1).clamp_min(0)  # images x scales
    return float((stacked ** weights.view(1, -1)).prod(dim=1).mean())


BT601_LUMA = (0.299, 0.587, 0.114)  # R, G, B weights of BT.601 luma


def rgb_to_luma(frames: torch.Tensor) -> torch.Tensor:
    """``... x 3 x H x W`` RGB -> ``... x 1 x H x W`` BT.601 luma (same range)."""
    weights = torch.tensor(BT601_LUMA, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    return (frames * weights).sum(dim=-3, keepdim=True)
