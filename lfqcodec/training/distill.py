"""Bit distillation for training (``TrainConfig.distill_steps``): a short batched search over the bits
against the current decoder, whose bits the encoder is then taught with a cross-entropy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..model.quantizer import keep_mask, straight_through_sign


def searched_bits(
    decoder: torch.nn.Module, latents: torch.Tensor, video: torch.Tensor, keep_bits: torch.Tensor, steps: int, lr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bits the current decoder turns into a closer picture than the encoder's (batched bit search).

    Adam on a copy of ``latents`` (``N x B x T x h x w``) through a straight-through sign, with
    bits ``>= keep_bits[n]`` of sample ``n`` dropped as in training; the squared error of each
    sample is tracked and its best bits kept (never worse than the encoder's own). The decoder's
    weights get no gradient. Returns ``(bool bits, float mask of the kept bits)``."""
    mask = keep_mask(latents.shape[1], keep_bits.to(latents.device))
    variable = latents.detach().float().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([variable], lr=lr)
    best_loss = torch.full((latents.shape[0],), math.inf, device=latents.device)
    best = variable.detach() > 0
    dtype = next(decoder.parameters()).dtype
    with torch.enable_grad():
        for step in range(steps + 1):
            codes = straight_through_sign(variable) * mask
            per_sample = (decoder(codes.to(dtype)).float() - video.float()).pow(2).mean(dim=(1, 2, 3, 4))
            better = per_sample.detach() < best_loss
            best_loss = torch.where(better, per_sample.detach(), best_loss)
            best = torch.where(better.view(-1, 1, 1, 1, 1), variable.detach() > 0, best)
            if step == steps:  # the last step's bits are scored, not moved
                break
            (variable.grad,) = torch.autograd.grad(per_sample.sum(), [variable])
            optimizer.step()
    return best, mask


def distillation_loss(latents: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the encoder's soft bits ``sigmoid(4 z)`` (the quantizer's soft
    assignment) against ``target`` bits, over the bits ``mask`` keeps (fp32)."""
    bce = F.binary_cross_entropy_with_logits(4 * latents.float(), target.float(), reduction="none")
    mask = mask.expand_as(bce)
    return (bce * mask).sum() / mask.sum().clamp_min(1)
