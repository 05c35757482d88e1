"""Encoder-side bit search: choose the bits the decoder turns into the closest picture.

The encoder network predicts a token's bits in one pass, and a small encoder leaves quality on the
table (an "amortization gap"). With ``search_steps > 0`` the encoder's latents are the starting
point of a gradient search: the kept bits of a chunk are decoded, the squared error against the
source frames is back-propagated to the latents through a straight-through sign, and Adam moves
the latents; the bits of the best step are kept. The decoder and the bitstream format are
unchanged; only encoding gets slower (each step is a decoder forward and backward pass).

With ``temporal_weight > 0`` the search also penalises flicker: the change of the decoded picture
from frame to frame should be the source's change (the squared difference of consecutive frames'
errors), including from the previous chunk's last decoded frame to this chunk's first, where a new
chunk restarts from an image and would otherwise jump.

With ``rate_weight > 0`` the search is rate-aware: the loss adds ``rate_weight x e0 x R / R0``,
where ``e0`` and ``R0`` are the loss and the rate at the start, so ``rate_weight = 2`` trades a 1 %
rise of the rate against a 2 % fall of the loss: 6 dB per doubling of the rate. With the file's
context model (``SearchConfig.rate_model``) ``R`` is the code length of the tile's kept bits under
it (recomputed from the current bits at every step), and its gradient is each bit's own change of
code length when it flips with its contexts held (:func:`lfqcodec.entropy.coder.coded_logits`): flipping
a bit the model predicts well is dear, one it cannot predict is cheap; ``rate_weight = 0.25`` (the
presets', ``lfqcodec.presets.preset.SEARCH_RATE``) keeps about the rate and most of the gain. Without a
model, ``R`` counts the kept bits that differ from the same bit one latent frame earlier (what
zstd's repeated bytes find cheap).

With ``trade_db_per_doubling > 0`` (and a rate model) each tile also remembers the step with the
best trade of its squared error against its code length at that slope (PSNR gained minus
``trade_db_per_doubling x log2(rate / rate at the start)``), the scale on which the caller judges the
result: a search run on a cheap rate term can overshoot, and its best step by that scale is then an
earlier, smaller change. :func:`search_candidates` returns both sets of bits.

Large frames are searched in tiles of the latent grid with a margin of ``halo`` tokens decoded
around each for context, so memory stays bounded; each tile starts from the bits already chosen
for the tiles before it. A tile's result is never worse than its start on the decoded crop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch

from ..model.quantizer import straight_through_sign
from ..model.tokenizer import TokenizerNet


@dataclass(frozen=True)
class SearchConfig:
    steps: int = 0  # decoder forward/backward passes per tile; 0 = the encoder's bits as they are
    lr: float = 0.1  # Adam step on the (RMS-normalised, about unit-scale) latents
    tile: int = 32  # tile side in tokens (the searched part; 32 tokens = 256 pixels)
    halo: int = 4  # tokens of context decoded around a tile (not changed by its search)
    temporal_weight: float = 1.0  # weight of the flicker term against the squared error
    rate_weight: float = 0.0  # weight of the rate term (module docstring); 0 = the search ignores the rate
    rate_model: object = None  # the file's context model (lfqcodec.entropy.coder.FittedModel) for the rate term;
    # None: the rate term counts changed bits
    trade_db_per_doubling: float = 0.0  # > 0, with a rate model: also keep each tile's best step at this
    # exchange rate of PSNR against code length (a second candidate, module docstring)


def _spans(size: int, tile: int) -> list[tuple[int, int]]:
    """Split ``range(size)`` into near-equal spans of at most ``tile``."""
    count = -(-size // max(1, tile))
    edges = [round(i * size / count) for i in range(count + 1)]
    return list(pairwise(edges))


def tiles_of(grid: tuple[int, int], tile: int) -> int:
    """How many tiles of at most ``tile`` tokens a search visits on a latent ``grid`` (h, w)."""
    return len(_spans(grid[0], tile)) * len(_spans(grid[1], tile))


def search_bits(tokenizer: TokenizerNet, video: torch.Tensor, latents: torch.Tensor, keep_bits: int, cfg: SearchConfig,
                previous_error: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Search the first ``keep_bits`` bits of one chunk.

    ``video``: the chunk as the encoder saw it (``1 x 3 x T x H x W`` in [-1, 1], ``T = 1 + f*k``,
    padded to the grid); ``latents``: the encoder's output for it (``1 x B x T' x h x w``);
    ``previous_error``: decoded minus source of the frame before the chunk (``1 x 3 x 1 x H x W``),
    when the chunk continues the same scene.
    Returns bool bits ``1 x B x T' x h x w``: searched bits first, the encoder's for the rest."""
    return search_candidates(tokenizer, video, latents, keep_bits, cfg, previous_error)[0]


def search_candidates(
    tokenizer: TokenizerNet,
    video: torch.Tensor,
    latents: torch.Tensor,
    keep_bits: int,
    cfg: SearchConfig,
    previous_error: torch.Tensor | None = None,
    on_tile: Callable[[], None] | None = None,
) -> list[torch.Tensor]:
    """:func:`search_bits`' bits (each tile's best step by the search's loss), then, with
    ``cfg.trade_db_per_doubling > 0`` and a rate model, each tile's best step by that trade when
    those bits differ (module docstring). Tiles after the first start from the first candidate's bits.
    ``on_tile()`` is called after each tile's search."""
    bits = tokenizer.quantizer.token_bits(latents)  # the search changes sign bits only (keep_bits <= sign bits)
    if cfg.steps <= 0 or keep_bits <= 0:
        return [bits]
    s = tokenizer.cfg.spatial_factor
    dropped = latents.new_zeros(latents[:, keep_bits:].shape)
    current = latents[:, :keep_bits].detach().float().clone()
    traded = current.clone()
    _, _, _, h, w = current.shape
    with torch.enable_grad():
        for y0, y1 in _spans(h, cfg.tile):
            for x0, x1 in _spans(w, cfg.tile):
                ya, yb = max(0, y0 - cfg.halo), min(h, y1 + cfg.halo)
                xa, xb = max(0, x0 - cfg.halo), min(w, x1 + cfg.halo)
                inner = (slice(None),) * 3 + (slice(y0 - ya, y1 - ya), slice(x0 - xa, x1 - xa))
                context = current[..., ya:yb, xa:xb]
                pixels = (..., slice(ya * s, yb * s), slice(xa * s, xb * s))
                target = video[pixels].float()
                before = previous_error[pixels].float() if previous_error is not None else None
                found, trade = _search_tile(tokenizer, context, inner, dropped[..., ya:yb, xa:xb], target, before, cfg)
                current[..., y0:y1, x0:x1] = found
                traded[..., y0:y1, x0:x1] = trade
                if on_tile is not None:
                    on_tile()
    bits[:, :keep_bits] = current > 0
    candidates = [bits]
    if cfg.trade_db_per_doubling > 0 and cfg.rate_model is not None and cfg.rate_weight > 0:
        other = bits.clone()
        other[:, :keep_bits] = traded > 0
        if not torch.equal(other, bits):
            candidates.append(other)
    return candidates


def _search_tile(
    tokenizer: TokenizerNet,
    context: torch.Tensor,
    inner: tuple[slice, ...],
    dropped: torch.Tensor,
    target: torch.Tensor,
    previous_error: torch.Tensor | None,
    cfg: SearchConfig,
) -> torch.Tensor:
    """Adam on the latents of ``context[inner]``; returns the best latents for that region by the
    search's loss, and by the trade of ``cfg.trade_db_per_doubling`` (the start where not asked for)."""
    dtype = next(tokenizer.decoder.parameters()).dtype
    variable = context[inner].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([variable], lr=cfg.lr)
    best_loss, best = float("inf"), variable.detach().clone()
    best_trade, traded = 0.0, best  # the start trades at 0 dB
    scale, start = None, None
    for _ in range(cfg.steps):
        latents = context.clone()
        latents[inner] = variable
        signs = straight_through_sign(latents)
        codes = torch.cat([signs, dropped.float()], dim=1).to(dtype)
        error = tokenizer.decoder(codes, first=True).float() - target
        loss = _loss(error, previous_error, cfg.temporal_weight)
        if cfg.rate_weight > 0:
            rate = _changes(signs[inner]) if cfg.rate_model is None else _code_length(signs, inner, cfg.rate_model)
            if scale is None:  # e0 / R0 at the start
                scale = loss.item() / max(rate.item(), 1.0)
            if cfg.trade_db_per_doubling > 0 and cfg.rate_model is not None:
                point = (error.pow(2).mean().item(), max(rate.item(), 1.0))
                start = start or point
                trade = _trade(start, point, cfg.trade_db_per_doubling)
                if trade > best_trade:
                    best_trade, traded = trade, variable.detach().clone()
            loss = loss + cfg.rate_weight * scale * rate
        if loss.item() < best_loss:
            best_loss, best = loss.item(), variable.detach().clone()
        (variable.grad,) = torch.autograd.grad(loss, [variable])
        optimizer.step()
    return best, traded


def _trade(start: tuple[float, float], point: tuple[float, float], db_per_doubling: float) -> float:
    """PSNR gained from ``start`` to ``point`` (each ``(squared error, code length)``) less
    ``db_per_doubling`` per doubling of the code length."""
    gain = 10 * math.log10(max(start[0], 1e-12) / max(point[0], 1e-12))
    return gain - db_per_doubling * math.log2(point[1] / start[1])


def _changes(signs: torch.Tensor) -> torch.Tensor:
    """Kept bits (``+-1``, straight-through) that differ from the same bit one latent frame earlier."""
    return (signs.diff(dim=2) / 2).pow(2).sum()


def _code_length(signs: torch.Tensor, inner: tuple[slice, ...], model) -> torch.Tensor:
    """Code length (bits) of ``signs[inner]`` (``1 x b x T' x h x w``, ``+-1`` straight-through) under
    the context model, the tile's context coded as a chunk of its own; its gradient is half each bit's
    change of code length when it alone flips (its contexts held) per unit of sign."""
    from ..entropy.coder import Z_MAX, coded_logits  # entropy imports constriction: only when a rate model is used

    bits = (signs.detach()[0] > 0).cpu().numpy()
    rows = torch.from_numpy(coded_logits(np.ascontiguousarray(bits), model)[None] + Z_MAX).long()[inner]
    cost = torch.from_numpy(model.cost.astype(np.float32) / 256)  # bits, per row: (0, 1)
    zero, one = (cost[rows, y].to(signs.device) for y in (0, 1))
    s = signs[inner].float()
    exact = torch.where(s.detach() > 0, one, zero).sum()
    slope = ((one - zero) / 2 * s).sum()
    return exact + slope - slope.detach()


def _loss(error: torch.Tensor, previous_error: torch.Tensor | None, temporal_weight: float) -> torch.Tensor:
    """Squared error plus ``temporal_weight`` x squared change of the error from frame to frame."""
    loss = error.pow(2).mean()
    if temporal_weight > 0:
        errors = error if previous_error is None else torch.cat([previous_error, error], dim=2)
        if errors.shape[2] > 1:
            loss = loss + temporal_weight * errors.diff(dim=2).pow(2).mean()
    return loss
