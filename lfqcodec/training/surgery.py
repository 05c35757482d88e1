"""Architecture surgery on trained tokenizers: remove residual blocks before a warm start.

Growing is done by :func:`lfqcodec.training.recipe.warm_start` (new blocks start as identity, so the grown
network reproduces the old one's output). Removing a block cannot be exact; it is how arithmetic moves
from where it buys least to where it buys more (``benchmarks/block_importance.py`` measures what
dropping each block costs before any training).
"""

from __future__ import annotations

import dataclasses
import re

from ..model.config import TokenizerConfig
from ..model.tokenizer import TokenizerNet


def drop_decoder_block(source: TokenizerNet, level: int, block: int) -> TokenizerNet:
    """A copy of ``source`` without residual block ``block`` of decoder level ``level``.

    ``level`` counts as in ``TokenizerConfig.decoder_blocks`` (0 = the finest, ``1/patch_size``
    resolution); the blocks after the removed one move up by one. Every other tensor is copied."""
    cfg = source.cfg
    if not 0 <= level < len(cfg.decoder_blocks) or not 0 <= block < cfg.decoder_blocks[level]:
        raise ValueError(f"decoder level {level} has no block {block} (blocks per level: {cfg.decoder_blocks})")
    if cfg.decoder_blocks[level] == 1:
        raise ValueError(f"decoder level {level} has a single block; it cannot be removed")
    blocks = list(cfg.decoder_blocks)
    blocks[level] -= 1
    target = TokenizerNet(dataclasses.replace(cfg, decoder_blocks=tuple(blocks)))
    module_index = len(cfg.decoder_blocks) - 1 - level  # decoder.levels runs coarsest first
    pattern = re.compile(rf"^decoder\.levels\.{module_index}\.(\d+)\.(.*)$")
    state = {}
    for name, tensor in source.state_dict().items():
        match = pattern.match(name)
        if match:
            index = int(match.group(1))
            if index == block:
                continue
            name = f"decoder.levels.{module_index}.{index - (index > block)}.{match.group(2)}"
        state[name] = tensor
    target.load_state_dict(state)
    return target


def grown_config(
    cfg: TokenizerConfig,
    drop_decoder_blocks: tuple[tuple[int, int], ...] = (),
    refine_blocks: tuple[int, ...] | None = None,
    frame_split: bool | None = None,
) -> TokenizerConfig:
    """The architecture a warm start from ``cfg`` builds: decoder blocks removed (``(level, block)`` pairs,
    as :func:`drop_decoder_block` takes them, in order), refiner blocks per stage and ``frame_split`` as
    given (``None`` keeps ``cfg``'s). Raises ``ValueError`` for a block that does not exist or is a level's last."""
    blocks = list(cfg.decoder_blocks)
    for level, block in drop_decoder_blocks:
        if not 0 <= level < len(blocks) or not 0 <= block < blocks[level] or blocks[level] == 1:
            raise ValueError(f"decoder block {level}.{block} cannot be removed (blocks per level: {tuple(blocks)})")
        blocks[level] -= 1
    changes: dict = {"decoder_blocks": tuple(blocks)}
    if refine_blocks:
        changes["refine_blocks"] = tuple(refine_blocks)
    if frame_split is not None:
        changes["frame_split"] = frame_split
    return dataclasses.replace(cfg, **changes)


def residual_config(cfg: TokenizerConfig, residual_bits: int, residual_blocks: int = 1) -> TokenizerConfig:
    """``cfg`` with ``residual_bits`` residual (magnitude) bits replacing its last sign bits, and the top
    quality level keeping them all (:mod:`lfqcodec.model.quantizer`). Raises ``ValueError`` for a bad count."""
    if cfg.residual_bits == residual_bits and cfg.residual_blocks == residual_blocks:
        return cfg  # already grown (training a residual model further)
    if cfg.residual_bits:
        raise ValueError(f"the model already has {cfg.residual_bits} residual bits")
    grown = dataclasses.replace(cfg, residual_bits=residual_bits, residual_blocks=residual_blocks)
    levels = {name: bits for name, bits in cfg.quality_bits.items() if bits <= grown.sign_bits}
    top = max(cfg.quality_bits, key=cfg.quality_bits.get)
    levels[top] = cfg.num_bits
    return dataclasses.replace(grown, quality_bits=levels)


RESIDUAL_START = 0.25  # d of the starting point sign * (1 + d * magnitude): +0.3-0.5 dB untrained on the selection clips


def prepare_residual(tokenizer: TokenizerNet, start: float = RESIDUAL_START) -> None:
    """After a warm start from a sign-only model: the decoder's input weights for the channels that now
    carry residual bits (they read the old model's last sign bits) become ``start`` times those of their
    sign channels, so the decoder starts by reading a residual channel ``sign * magnitude`` as the 4-level
    value ``sign * (1 + start * magnitude)``. Sign levels feed those channels zeros, so every sign level
    decodes exactly as before; ``start = 0`` makes the residual levels decode as the top sign level."""
    import torch

    s, r = tokenizer.cfg.sign_bits, tokenizer.cfg.residual_bits
    with torch.no_grad():
        weight = tokenizer.decoder.inp.conv.weight
        weight[:, s : s + r] = start * weight[:, :r]


def residual_input_mask(tokenizer: TokenizerNet):
    """1 for the decoder input weights that read residual channels (trainable with ``--train-only
    residual``), 0 for those that read sign channels (a gradient hook keeps them exactly)."""
    import torch

    mask = torch.zeros_like(tokenizer.decoder.inp.conv.weight)
    mask[:, tokenizer.cfg.sign_bits :] = 1
    return mask


def calibrate_thresholds(tokenizer: TokenizerNet, videos, beyond: float = 1 / 3) -> list[float]:
    """Set each residual channel's magnitude threshold so that a share ``beyond`` of the latents of
    ``videos`` (``N x 3 x T x H x W`` tensors in [-1, 1]) lies beyond it (1/3: the MSE-optimal 4-level
    quantizer of a Gaussian). Thresholds are rounded to fp16, as the model file stores them."""
    import torch

    r = tokenizer.cfg.residual_bits
    magnitudes = []
    with torch.no_grad():
        for video in videos:
            z = tokenizer.encoder(video.to(next(tokenizer.encoder.parameters()).dtype))
            magnitudes.append(z[:, :r].abs().transpose(0, 1).reshape(r, -1).float())
    values = torch.cat(magnitudes, dim=1)
    sample = values[:, torch.randperm(values.shape[1], generator=torch.Generator().manual_seed(0))[:200_000]]
    thresholds = torch.quantile(sample, 1 - beyond, dim=1).half().float()
    tokenizer.quantizer.thresholds.copy_(thresholds.to(tokenizer.quantizer.thresholds.device))
    return thresholds.tolist()
