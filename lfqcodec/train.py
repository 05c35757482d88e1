"""Training loop for the tokenizer (``lfqcodec train``).

One script for the CPU and CUDA: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16 /
AMX: 1.8x faster per step than fp32 on this project's 2-core Xeon), DistributedDataParallel when started by
``torchrun`` (``WORLD_SIZE > 1``). Everything bulky (full training state, logs) goes to
``--out`` (a folder outside the repository); the best EMA weights are also written there as a
compact fp16 model file that can be copied into ``models/``.

Losses: L1 (or RMSE, ``pixel_loss``) + ``ssim_weight`` x (1 - SSIM) on pixels, plus the LFQ entropy
penalty (per-token entropy low, batch-average entropy high) and the commitment loss, both in fp32,
and optionally the bits' correlation inside a clip (``decorrelation_weight``). The decoder is trained
on random bit prefixes (nested LFQ) so each quality level is the same network with fewer bits.

Bit distillation (``distill_steps > 0``): a one-pass encoder leaves quality on the table that an
encoder-side search over the bits recovers (``lfqcodec.search``). Each training step then runs a
short batched search from the encoder's latents against the current decoder and adds a
cross-entropy that teaches the encoder the searched bits, so plain encoding gets part of the
search's gain at no cost at encode time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .atomic import atomic_open
from .checkpoint import load_model, load_run_state, save_model
from .config import TokenizerConfig
from .data import BatchStream, SamplerConfig, prepare_cache
from .device import deterministic
from .errors import LfqError
from .inference import native_bf16
from .metrics import ssim
from .distill import distillation_loss, searched_bits
from .quantizer import bit_correlation
from .surgery import calibrate_thresholds, drop_decoder_block, prepare_residual, residual_input_mask
from .validation import load_validation, validate
from .tokenizer import TokenizerNet

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


def train(
    model_cfg: TokenizerConfig,
    train_cfg: TrainConfig,
    sampler_cfg: SamplerConfig,
    data_dirs: list[Path],
    val_clips: list[Path],
    out_dir: Path,
    init: str | None = None,
    name: str = "lfq-base",
    device: str = "auto",
    exclude: tuple[str, ...] = (),
    drop_decoder_blocks: tuple[tuple[int, int], ...] = (),
    material: tuple[list[Path], list[tuple[str, torch.Tensor]]] | None = None,
    on_validated: Callable[[Path, dict], None] | None = None,
) -> None:
    """``exclude``: file names or stems kept out of the training material besides the validation clips
    (clips held out for measuring: the CLI passes :data:`lfqcodec.heldout.EXCLUDED`). ``drop_decoder_blocks``: (level, block) pairs removed from the ``init``
    model's decoder before the warm start (:func:`lfqcodec.surgery.drop_decoder_block`, applied in order).
    ``material``: already decoded ``(cache .npy paths, validation clips)`` (:func:`lfqcodec.datapack.read_pack`)
    instead of ``data_dirs`` / ``val_clips``. ``on_validated(out_dir, result)`` runs after each validation, once
    the weights of that point are written (the GPU job exports them from there)."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = dist.get_rank()
    if device == "auto":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    deterministic()  # TF32 off: validation numbers and saved bits as on the CPU (bf16 autocast is separate)
    torch.set_num_threads(train_cfg.threads or os.cpu_count() or 1)
    torch.manual_seed(train_cfg.seed + rank)
    if out_dir.exists() and not out_dir.is_dir():
        raise LfqError(f"run folder {out_dir} is a file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LfqError(f"cannot create the run folder {out_dir}: {exc.strerror or exc}") from None
    is_main = rank == 0

    check_quality_probs(train_cfg.quality_probs, model_cfg)  # before minutes of data preparation
    if material is None:
        cached = prepare_cache(data_dirs, out_dir / "cache", exclude={p.name for p in val_clips} | set(exclude))
        validation = load_validation(val_clips, frames=train_cfg.val_frames)
    else:
        cached, validation = material

    state_path = out_dir / "state.pt"
    step = 0
    best = -math.inf
    if state_path.exists():
        state = load_run_state(state_path)
        model_cfg = TokenizerConfig.from_dict(json.loads(state["model_config"]))
    tokenizer = TokenizerNet(model_cfg)
    if not state_path.exists() and init:
        source = load_model(init).tokenizer
        for level, block in drop_decoder_blocks:
            source = drop_decoder_block(source, level, block)
        warm_start(tokenizer, source)
        log.info("warm-started from %s", init)
        grow_residual = bool(model_cfg.residual_bits and not source.cfg.residual_bits)
        if grow_residual:
            prepare_residual(tokenizer)
    else:
        grow_residual = False
    tokenizer.to(dev)
    freeze_for(tokenizer, train_cfg)
    model = torch.nn.parallel.DistributedDataParallel(tokenizer) if distributed else tokenizer
    decay, no_decay = [], []
    partial = tokenizer.decoder.inp.conv.weight if train_cfg.train_only == "residual" else None
    for p in tokenizer.parameters():
        if p.requires_grad:  # no decay where part of a tensor must stay as it is
            (no_decay if p.ndim <= 1 or p is partial else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train_cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train_cfg.lr,
        betas=(0.9, 0.99),
    )
    ema = Ema(tokenizer, train_cfg.ema_decay)
    if state_path.exists():
        try:
            tokenizer.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:  # e.g. --freeze-decoder changed the parameter groups
            raise LfqError(f"{state_path} does not fit this run's settings: {str(exc).splitlines()[0]}") from None
        ema.state = {k: v.float() for k, v in state["ema"].items()}
        step, best = int(state["step"]), float(state["best"])
        log.info("resumed from %s at step %d", state_path, step)

    # a resumed run must not replay the samples it has already seen
    stream = BatchStream(cached, sampler_cfg, train_cfg.batch, train_cfg.image_batch, train_cfg.image_every,
                         seed=train_cfg.seed + rank + 7919 * step, start=step)  # fmt: skip
    if train_cfg.loader_workers > 0:
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=train_cfg.loader_workers,
                                             pin_memory=dev.type == "cuda", prefetch_factor=4, persistent_workers=True)  # fmt: skip
        batches = iter(loader)
    else:
        batches = iter(stream)
    if grow_residual:  # thresholds from the material, before the first step (consumes a few batches)
        thresholds = calibrate_thresholds(tokenizer, [next(batches)[1].to(dev) for _ in range(8)])
        log.info("residual thresholds: %s", ", ".join(f"{t:.3f}" for t in thresholds))
    qualities = list(train_cfg.quality_probs)
    keep_choices = residual_keep_choices(model_cfg) if train_cfg.train_only == "residual" else []
    select = train_cfg.select_quality or (
        max(model_cfg.quality_bits, key=model_cfg.quality_bits.get) if keep_choices else "medium"
    )
    probs = np.array([train_cfg.quality_probs[q] for q in qualities], dtype=float)
    probs /= probs.sum()
    rng = np.random.default_rng(train_cfg.seed + 1000 + rank + 7919 * step)
    use_bf16 = bf16_autocast_default(dev) if train_cfg.bf16 is None else train_cfg.bf16
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16)
    if is_main:
        log.info("bf16 autocast: %s (%s)", "on" if use_bf16 else "off", dev)
    train_log = open(out_dir / "train.jsonl", "a") if is_main else None
    val_log = open(out_dir / "val.jsonl", "a") if is_main else None
    last_checkpoint = time.time()
    window: list[dict] = []
    usage_acc = torch.zeros(model_cfg.num_bits)

    def save_state() -> None:
        snapshot = {
            "model": tokenizer.state_dict(),
            "optimizer": optimizer.state_dict(),
            "ema": ema.state,
            "step": step,
            "best": best,
            "model_config": model_cfg.to_json(),
            "train_config": json.dumps(asdict(train_cfg)),
        }
        with atomic_open(state_path) as handle:
            torch.save(snapshot, handle)

    started = time.time()
    budget = train_cfg.minutes * 60
    last_validation = started

    def progress() -> float | None:
        return (time.time() - started) / budget if budget > 0 else None

    def run_validation() -> None:
        nonlocal best
        ema_model = TokenizerNet(model_cfg)
        ema_model.load_state_dict(ema.state)
        ema_model.to(dev)
        result = validate(ema_model, validation, dev)
        result.update(step=step, time=time.time(), elapsed=time.time() - started)
        val_log.write(json.dumps(result) + "\n")
        val_log.flush()
        log.info(
            "val step %d: %s",
            step,
            ", ".join(f"{q} {result[q]['psnr']:.2f} dB {result[q]['bpp']:.4f} bpp" for q in model_cfg.quality_bits),
        )
        if result[select]["psnr"] > best:
            best = result[select]["psnr"]
            save_model(out_dir / f"{name}.safetensors", ema_model, name)
        save_model(out_dir / f"{name}-last.safetensors", ema_model, name)
        if on_validated is not None:
            on_validated(out_dir, result)
        tokenizer.train()

    if is_main and train_cfg.val_minutes > 0 and step == 0:
        run_validation()  # the starting point, for the comparison the run is for
    tokenizer.train()
    while step < train_cfg.steps and not (budget > 0 and time.time() - started >= budget):
        t0 = time.time()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, train_cfg, progress())
        image_step, video = next(batches)
        video = video.to(dev, non_blocking=True)
        if keep_choices:
            keep = torch.tensor(rng.choice(keep_choices, size=video.shape[0]), device=dev)
        else:
            choice = rng.choice(len(qualities), size=video.shape[0], p=probs)
            keep = torch.tensor([model_cfg.quality_bits[qualities[c]] for c in choice], device=dev)
        with autocast:
            loss, stats, bits = compute_losses(model, video, keep, train_cfg, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(tokenizer.parameters(), train_cfg.grad_clip)
        if torch.isfinite(grad_norm):
            optimizer.step()
            ema.update(tokenizer, step)
        step += 1
        usage_acc += bits.float().mean(dim=(0, 2, 3, 4)).cpu()
        stats.update(step_time=time.time() - t0, grad_norm=float(grad_norm), image_step=image_step)
        window.append(stats)

        if is_main and step % train_cfg.log_every == 0:
            row = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            row["psnr"] = 10 * math.log10(4 / max(row["mse"], 1e-10))
            usage = usage_acc / len(window)
            row.update(step=step, lr=learning_rate(step, train_cfg, progress()), time=time.time())
            row["bit_usage_min"] = float(usage.min())
            row["bit_usage_max"] = float(usage.max())
            train_log.write(json.dumps(row) + "\n")
            train_log.flush()
            log.info(
                "step %d loss %.4f psnr %.2f ent %.2f/%.2f %.2fs/step",
                step, row["loss"], row["psnr"], row["token_entropy"], row["codebook_entropy"], row["step_time"],
            )
            window.clear()
            usage_acc.zero_()

        timed = train_cfg.val_minutes > 0
        due = time.time() - last_validation >= train_cfg.val_minutes * 60 if timed else step % train_cfg.val_every == 0
        if is_main and (due or step == train_cfg.steps):
            run_validation()
            last_validation = time.time()

        if is_main and time.time() - last_checkpoint > train_cfg.checkpoint_minutes * 60:
            save_state()
            last_checkpoint = time.time()
    if is_main:
        if train_cfg.val_minutes > 0 and time.time() - last_validation > 1 and step < train_cfg.steps:
            run_validation()  # the time budget ended between validations
        save_state()
        train_log.close()
        val_log.close()
    if distributed:
        dist.destroy_process_group()
