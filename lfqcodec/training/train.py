"""Training loop for the tokenizer (``lfqcodec train``); the pieces of one step (config, losses, schedule, EMA,
freezing, warm start) are :mod:`lfqcodec.training.recipe`.

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
encoder-side search over the bits recovers (``lfqcodec.codec.search``). Each training step then runs a
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
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..base.atomic import atomic_open
from ..model.checkpoint import load_model, load_run_state, save_model
from ..model.config import TokenizerConfig
from .data import BatchStream, SamplerConfig, prepare_cache
from .recipe import (Ema, TrainConfig, bf16_autocast_default, check_quality_probs, compute_losses, freeze_for,
                     learning_rate, residual_keep_choices, warm_start)
from ..model.device import deterministic
from ..base.errors import LfqError
from .surgery import calibrate_thresholds, drop_decoder_block, prepare_residual
from .validation import load_validation, validate
from ..model.tokenizer import TokenizerNet

log = logging.getLogger(__name__)


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
    (clips held out for measuring: the CLI passes :data:`lfqcodec.training.heldout.EXCLUDED`). ``drop_decoder_blocks``: (level, block) pairs removed from the ``init``
    model's decoder before the warm start (:func:`lfqcodec.training.surgery.drop_decoder_block`, applied in order).
    ``material``: already decoded ``(cache .npy paths, validation clips)`` (:func:`lfqcodec.training.datapack.read_pack`)
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
