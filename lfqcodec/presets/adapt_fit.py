"""Fitting a decoder update (:mod:`lfqcodec.codec.adapt`) to the chunks of a run, at encode time.

Adam on the changes of the chosen parameters, the squared error of the decoded pictures as the loss.
Each step decodes one chunk of the run (in turn) cropped to a random tile of the latent grid, with
a margin of ``halo`` tokens decoded for context but left out of the loss, so memory is bounded by
the tile, not by the frame size. Seeded (``FitConfig.seed``) and deterministic on the CPU for a
given thread count; on CUDA the floating-point sums differ, so the fitted update (and the file) can
differ in its last bits from a CPU encode (either file decodes anywhere).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from ..codec.adapt import DecoderUpdate, UpdateSpec, effective_params, quantize, slots


@dataclass(frozen=True)
class FitConfig:
    steps: int = 60  # Adam steps over the run (one chunk tile per step)
    lr: float = 2e-3  # Adam step size on the changes
    tile: int = 32  # tile side in tokens (32 tokens = 256 pixels)
    halo: int = 2  # tokens of context around a tile, outside the loss
    lora_init: float = 0.02  # std of the adapters' B factor at the start (A starts at zero)
    seed: int = 0


@dataclass(frozen=True)
class ChunkTarget:
    """One chunk to fit on: ``codes`` ``1 x B x T' x h x w`` (+-1 for kept bits, 0 for dropped ones)
    and the source ``video`` ``1 x 3 x T x H x W`` in [-1, 1] (padded to the grid)."""

    codes: torch.Tensor
    video: torch.Tensor


def _window(size: int, tile: int, halo: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A random tile ``[lo, hi)`` of at most ``tile`` and its context ``[a, b)``."""
    length = min(size, tile)
    lo = int(torch.randint(0, size - length + 1, (1,), generator=generator))
    hi = lo + length
    return lo, hi, max(0, lo - halo), min(size, hi + halo)


def initial_changes(decoder: nn.Module, spec: UpdateSpec, cfg: FitConfig) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    device = next(decoder.parameters()).device
    changes = []
    for slot in slots(decoder, spec):
        if slot.lora == "B":
            change = torch.randn(slot.shape, generator=generator) * cfg.lora_init
        else:
            change = torch.zeros(slot.shape)
        changes.append(change.to(device).requires_grad_(True))
    return changes


def decode_with(decoder: nn.Module, spec: UpdateSpec, changes: list[torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
    """Decode ``codes`` (a whole chunk, ``first=True``) with ``changes`` added to the decoder."""
    params = effective_params(decoder, spec, changes)
    return functional_call(decoder, params, (codes,), {"first": True}, strict=False)


def fit_changes(
    decoder: nn.Module,
    targets: list[ChunkTarget],
    spec: UpdateSpec,
    cfg: FitConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> list[torch.Tensor]:
    """Fit float changes (slot order) for ``targets``; ``on_step(step, loss)`` after each step."""
    s = decoder.cfg.spatial_factor
    changes = initial_changes(decoder, spec, cfg)
    optimizer = torch.optim.Adam(changes, lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    flags = [p.requires_grad for p in decoder.parameters()]
    decoder.requires_grad_(False)
    try:
        with torch.enable_grad():
            for step in range(cfg.steps):
                target = targets[step % len(targets)]
                h, w = target.codes.shape[-2:]
                y0, y1, ya, yb = _window(h, cfg.tile, cfg.halo, generator)
                x0, x1, xa, xb = _window(w, cfg.tile, cfg.halo, generator)
                codes = target.codes[..., ya:yb, xa:xb]
                decoded = decode_with(decoder, spec, changes, codes).float()
                inner = (..., slice((y0 - ya) * s, (y1 - ya) * s), slice((x0 - xa) * s, (x1 - xa) * s))
                pixels = target.video[..., y0 * s : y1 * s, x0 * s : x1 * s].float()
                loss = (decoded[inner] - pixels).pow(2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if on_step is not None:
                    on_step(step, loss.item())
    finally:
        for p, flag in zip(decoder.parameters(), flags):
            p.requires_grad_(flag)
    return [c.detach() for c in changes]


def fit_update(
    decoder: nn.Module,
    targets: list[ChunkTarget],
    spec: UpdateSpec,
    cfg: FitConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> DecoderUpdate:
    """:func:`fit_changes`, quantised. Use ``DecoderUpdate.from_bytes(update.to_bytes(), decoder)``
    (or the update itself: the values are the same) for the pictures the decoder will draw."""
    return quantize(spec, fit_changes(decoder, targets, spec, cfg, on_step))
