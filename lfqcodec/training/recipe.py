"""The training recipe: :class:`TrainConfig`, the losses of one step (reconstruction, LFQ terms, bit
distillation), the learning-rate schedule, the weight average (EMA), what a run freezes and how a warm start
copies weights. :func:`lfqcodec.training.train.train` is the loop that runs them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..base.errors import LfqError
from ..base.metrics import ssim
from ..model.config import TokenizerConfig
from ..model.inference import native_bf16
from ..model.quantizer import bit_correlation
from ..model.tokenizer import TokenizerNet
from .distill import distillation_loss, searched_bits
from .surgery import residual_input_mask

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 20000  # total optimizer steps of this run's schedule
    batch: int = 3  # video clips per step (of SamplerConfig.frames frames each)
    image_batch: int = 8  # still images per image step
    image_every: int = 4  # every n-th step is a still-image step
    lr: float = 1e-3
    min_lr_ratio: float = 0.05  # cosine decay ends at lr * this
    warmup: int = 500
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    ssim_weight: float = 0.2
    pixel_loss: str = "l1"  # "l1", or "rmse": the root of the batch's mean squared error (PSNR's own measure, L1's scale)
    entropy_weight: float = 0.1
    entropy_boost: float = 3.0  # entropy weight multiplier at step 0, annealed to 1 by `entropy_anneal`
    entropy_anneal: int = 2000
    commitment_weight: float = 0.1
    quality_probs: dict[str, float] = field(default_factory=lambda: {"low": 0.25, "medium": 0.45, "high": 0.3})
    log_every: int = 50
    val_every: int = 1000
    val_frames: int = 33  # frames of each validation clip (1 + 4k; a whole default chunk)
    checkpoint_minutes: float = 5.0
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = all cores
    bf16: bool | None = None  # bf16 autocast; None = on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX)
    freeze_decoder: bool = False  # train the encoder only, against a fixed decoder
    freeze_encoder: bool = False  # train the decoder only: the bits (and so the rate and the entropy model's
    # statistics) stay those of the --init model
    distill_steps: int = 0  # per-step bit search (decoder passes) whose bits the encoder is taught; 0 = off
    distill_lr: float = 0.1  # Adam step of that search on the (unit-scale) latents
    distill_weight: float = 0.2  # weight of the encoder's cross-entropy against the searched bits
    decorrelation_weight: float = 0.0  # weight of the bits' mean squared correlation inside a clip (0 = logged only)
    minutes: float = 0.0  # > 0: a wall-clock budget; the cosine runs over it and training stops at it (`steps` caps)
    val_minutes: float = 0.0  # > 0: validate this often (and at step 0) instead of every `val_every` steps
    loader_workers: int = 0  # > 0: batches are made by this many DataLoader worker processes
    train_only: str = ""  # "residual": only the decoder's residual reader learns (every sign level keeps its
    # pictures exactly); each step keeps the signs and a random multiple of a quarter of the residual bits
    select_quality: str = ""  # the quality whose validation PSNR picks the best weights ("" = medium, or the
    # top level with train_only "residual")


def check_quality_probs(probs: dict[str, float], model_cfg: TokenizerConfig) -> None:
    """Every name must be a quality of the model, weights >= 0 and not all zero."""
    unknown = sorted(set(probs) - set(model_cfg.quality_bits))
    if unknown or any(p < 0 for p in probs.values()) or sum(probs.values()) <= 0:
        raise LfqError(
            f"quality mix {probs}: qualities are {', '.join(model_cfg.quality_bits)}, weights >= 0, not all 0"
            + (f" (unknown: {', '.join(unknown)})" if unknown else "")
        )


def learning_rate(step: int, cfg: TrainConfig, progress: float | None = None) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then a cosine to ``lr * min_lr_ratio`` over the steps (or,
    given, over ``progress`` in [0, 1]: the elapsed share of a time budget)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if progress is None:
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, max(0.0, progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def bf16_autocast_default(dev: torch.device) -> bool:
    """bf16 autocast pays on CUDA and on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX); elsewhere
    oneDNN emulates it: a training step of 3 x 33 x 96x96 took 125-140 s on a busy 2-core AVX512 Xeon without
    AVX512-BF16 (whose oneDNN still reports bf16 as supported), where fp32 steps take seconds."""
    return dev.type == "cuda" or (dev.type == "cpu" and native_bf16(dev)[0])


PIXEL_LOSSES = ("l1", "rmse")


def reconstruction_loss(
    recon: torch.Tensor, target: torch.Tensor, ssim_weight: float, pixel_loss: str = "l1"
) -> torch.Tensor:
    with torch.autocast(recon.device.type, enabled=False):  # SSIM's variances go negative (-inf loss) in bf16
        return _reconstruction_loss(recon, target, ssim_weight, pixel_loss)


def _reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, ssim_weight: float, pixel_loss: str) -> torch.Tensor:
    if pixel_loss not in PIXEL_LOSSES:
        raise LfqError(f"pixel loss {pixel_loss!r}: choose one of {', '.join(PIXEL_LOSSES)}")
    error = recon.float() - target.float()
    # RMSE, not MSE: minimising it minimises the MSE (maximises PSNR) while its gradient keeps L1's scale
    # against the entropy and commitment terms (MSE's would be ~10x smaller at 25 dB).
    pixel = error.abs().mean() if pixel_loss == "l1" else error.pow(2).mean().add(1e-12).sqrt()
    if ssim_weight == 0 or min(target.shape[-2:]) < 16:
        return pixel
    frames = lambda v: v.float().transpose(1, 2).reshape(-1, 3, *v.shape[-2:]) + 1
    return pixel + ssim_weight * (1 - ssim(frames(recon), frames(target), data_range=2.0).mean())


def compute_losses(model, video: torch.Tensor, keep_bits: torch.Tensor, cfg: TrainConfig, step: int):
    recon, q = model(video, keep_bits)
    boost = 1 + (cfg.entropy_boost - 1) * max(0.0, 1 - step / max(1, cfg.entropy_anneal))
    rec = reconstruction_loss(recon, video, cfg.ssim_weight, cfg.pixel_loss)
    total = rec + cfg.entropy_weight * boost * q.entropy_loss + cfg.commitment_weight * q.commitment_loss
    if cfg.decorrelation_weight > 0:
        correlation = bit_correlation(q.latents)
        total = total + cfg.decorrelation_weight * correlation
    else:  # logged only: no graph to build
        with torch.no_grad():
            correlation = bit_correlation(q.latents)
    distill_stats = {}
    if cfg.distill_steps > 0:
        decoder = (model.module if hasattr(model, "module") else model).decoder
        target, mask = searched_bits(decoder, q.latents, video, keep_bits, cfg.distill_steps, cfg.distill_lr)
        distill = distillation_loss(q.latents, target, mask)
        total = total + cfg.distill_weight * distill
        flipped = ((target != q.bits).float() * mask).sum() / mask.expand_as(target).sum()
        distill_stats = {"distill": distill.item(), "flipped": flipped.item()}
    stats = {
        "loss": total.item(),
        "rec": rec.item(),
        "mse": F.mse_loss(recon.float().clamp(-1, 1), video.float()).item(),
        "token_entropy": q.token_entropy.item(),
        "codebook_entropy": q.codebook_entropy.item(),
        "commitment": q.commitment_loss.item(),
        "bit_correlation": correlation.item(),
        **distill_stats,
    }
    return total, stats, q.bits


class Ema:
    """Exponential moving average of a model's floating-point state."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in model.state_dict().items():
            self.state[k].mul_(decay).add_(v.detach().float(), alpha=1 - decay)


def residual_keep_choices(model_cfg: TokenizerConfig) -> list[int]:
    """Bits kept by a step that trains the residual reader: all signs and 1/4, 2/4, 3/4 or all the residual bits."""
    step = max(1, model_cfg.residual_bits // 4)
    return sorted({model_cfg.sign_bits + n for n in [*range(step, model_cfg.residual_bits, step), model_cfg.residual_bits]})


def freeze_for(tokenizer: TokenizerNet, cfg: TrainConfig) -> None:
    """``requires_grad`` as ``cfg`` says: encoder / decoder frozen, or everything but the residual reader."""
    if cfg.freeze_decoder and cfg.freeze_encoder:
        raise LfqError("--freeze-decoder and --freeze-encoder together leave nothing to train")
    if cfg.train_only not in ("", "residual"):
        raise LfqError(f"--train-only {cfg.train_only!r}: only 'residual' is known")
    if cfg.train_only == "residual":
        if tokenizer.decoder.residual is None:
            raise LfqError("--train-only residual needs a model with residual bits (--residual-bits)")
        tokenizer.requires_grad_(False)
        tokenizer.decoder.residual.requires_grad_(True)
        weight = tokenizer.decoder.inp.conv.weight  # its residual columns learn; a hook keeps the sign columns
        weight.requires_grad_(True)
        mask = residual_input_mask(tokenizer)
        weight.register_hook(lambda grad: grad * mask.to(grad.device))
    if cfg.freeze_decoder:
        tokenizer.decoder.requires_grad_(False)
    if cfg.freeze_encoder:
        tokenizer.encoder.requires_grad_(False)


def warm_start(tokenizer: TokenizerNet, source: TokenizerNet) -> list[str]:
    """Copy every tensor of ``source`` whose name and shape ``tokenizer`` shares; returns the names
    left at their initial values (new parts of a grown architecture)."""
    own = tokenizer.state_dict()
    shared = {k: v for k, v in source.state_dict().items() if k in own and own[k].shape == v.shape}
    tokenizer.load_state_dict(shared, strict=False)
    fresh = sorted(set(own) - set(shared))
    if fresh:
        log.info("warm start: %d of %d tensors copied; new: %s", len(shared), len(own), ", ".join(fresh))
    return fresh
