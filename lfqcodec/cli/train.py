"""``lfqcodec train``, ``lfqcodec train-entropy`` and ``lfqcodec calibrate-int8``: the training commands of the CLI (registered on
:func:`lfqcodec.cli.commands.main`), kept apart from the codec's commands."""

from __future__ import annotations

from pathlib import Path

import click

from .common import FiniteRange, device_option, handle_errors, quiet_option
from ..base.errors import LfqError

_data_option = click.option(
    "--data", "data_dirs", multiple=True, type=click.Path(exists=True, path_type=Path),
    help="Folder (or file) of training videos and images; repeatable [default: ~/.cache/lfqcodec/data].",
)  # fmt: skip


def _training_data(data_dirs: tuple[Path, ...]) -> list[Path]:
    """``--data`` as given, else the fetched data's video and image folders (which must exist)."""
    default_data = Path.home() / ".cache/lfqcodec/data"
    data_dirs = list(data_dirs) or [default_data / "video", default_data / "images"]
    for path in data_dirs:
        if not path.exists():
            raise LfqError(f"{path} not found (run scripts/fetch_data.sh first, or pass --data)")
    return data_dirs


def _progress(quiet: bool):
    return None if quiet else (lambda message: click.echo(message, err=True))


@click.command("train-entropy")
@click.option("--model", default=None, help="Tokenizer to fit for [default: lfq-base].")
@_data_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output .entropy file [default: models/<tokenizer name>.entropy, next to the tokenizer].")
@click.option("--frames", type=click.IntRange(1), default=65, show_default=True, help="Frames of each clip to use.")
@click.option("--max-tokens", type=click.IntRange(1000), default=400_000, show_default=True,
              help="Tokens (drawn at random) the logistic fit uses.")
@click.option("--network/--no-network", default=True, show_default=True,
              help="Also fit coder 2's residual network (files 2.1) on top of the tables; --no-network: tables alone (2.0).")
@click.option("--keep-tables", is_flag=True,
              help="Keep the tables of the entropy model already at --out and fit only the network, so files coded "
                   "with those tables alone keep their model.")  # fmt: skip
@click.option("--hidden", type=click.IntRange(1, 256), default=8, show_default=True, help="The network's hidden units (its coding time grows with them).")
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True, help="The network's training epochs.")
@quiet_option
@handle_errors
def train_entropy(model, data_dirs, out, frames, max_tokens, network, keep_tables, hidden, epochs, quiet):
    """Fit the context model that codes a tokenizer's bits in .lfq 2.x (minutes on a CPU).

    The clips of lfqcodec.training.heldout (bikes, carphone(_pristine), armwrestling, kitten, aquarium, city, vtest) are held out."""
    import logging

    from ..model.checkpoint import load_model
    from ..training.entropy_fit import NetSettings
    from ..training.entropy_fit import train_entropy as fit

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(message)s")
    settings = NetSettings(hidden, epochs) if network else None
    path, fitted = fit(load_model(model), _training_data(data_dirs), out, frames, max_tokens, progress=_progress(quiet),
                       net=settings, keep_tables=keep_tables)  # fmt: skip
    click.echo(f"{path}: entropy model {fitted.model_id.hex()} for tokenizer {fitted.tokenizer_id.hex()}", err=True)


@click.command("calibrate-int8")
@click.option("--model", default=None, help="Tokenizer to calibrate [default: lfq-base].")
@_data_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output .int8 file [default: beside the tokenizer's weights, <weights name>.int8].")
@click.option("--frames", type=click.IntRange(1), default=9, show_default=True, help="Frames of each clip to run.")
@quiet_option
@handle_errors
def calibrate_int8(model, data_dirs, out, frames, quiet):
    """Measure the activation ranges that --precision int8 quantizes with (a few minutes on a CPU).

    The same clips as train-entropy are held out."""
    from ..model.checkpoint import MODELS_DIR, load_model
    from ..training.entropy_fit import training_clips
    from ..model.int8 import SUFFIX, save_ranges
    from ..training.calibrate import calibrate

    data_dirs = _training_data(data_dirs)
    loaded = load_model(model)
    ranges, used = calibrate(loaded, training_clips(data_dirs), frames, progress=_progress(quiet))
    if not ranges:
        raise LfqError("no clip could be used for calibration (pass --data)")
    default = loaded.path.with_suffix(SUFFIX) if loaded.path else MODELS_DIR / f"{loaded.name}{SUFFIX}"
    path = save_ranges(out or default, ranges, loaded.model_id, used)
    click.echo(f"{path}: int8 ranges of {len(ranges)} layers for tokenizer {loaded.model_id.hex()}", err=True)


def _parse_blocks(value: str | None) -> tuple[int, ...] | None:
    """``"2,6"`` -> ``(2, 6)``."""
    if not value:
        return None
    try:
        return tuple(int(n) for n in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of block counts, e.g. 2,6") from None


def _parse_level_block(value: str) -> tuple[int, int]:
    """``"1.1"`` -> ``(1, 1)``."""
    try:
        level, block = (int(n) for n in value.split("."))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LEVEL.BLOCK, e.g. 1.1") from None
    return level, block


def _parse_mix(value: str | None) -> dict[str, float] | None:
    """``"low=0.4,medium=0.4"`` -> ``{"low": 0.4, "medium": 0.4}`` (names are checked by training)."""
    if not value:
        return None
    try:
        return {name.strip(): float(weight) for name, weight in (item.split("=") for item in value.split(","))}
    except ValueError:
        raise click.BadParameter(f"{value!r} is not QUALITY=WEIGHT,..., e.g. low=0.35,medium=0.45") from None


@click.command()
@click.option("--data", "data_dirs", multiple=True, type=click.Path(exists=True, readable=False, path_type=Path),
              help="Folder (or file) of training videos and images; repeatable [default: ~/.cache/lfqcodec/data].")
@click.option("--val", "val_clips", multiple=True, type=click.Path(exists=True, dir_okay=False, readable=False, path_type=Path),
              help="Held-out validation clip; repeatable (excluded from training).")
@click.option("--out", type=click.Path(path_type=Path), default=Path.home() / ".cache/lfqcodec/runs/base",
              show_default=True, help="Run folder: state, logs, data cache, best weights.")
@click.option("--steps", type=click.IntRange(1), default=12000, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak learning rate (cosine decay after warm-up).")
@click.option("--warmup", type=click.IntRange(0), default=500, show_default=True, help="Warm-up steps.")
@click.option("--freeze-decoder", is_flag=True, help="Train the encoder only (the decoder stays as initialised).")
@click.option("--freeze-encoder", is_flag=True,
              help="Train the decoder only: the bits, the rate and the entropy model's statistics stay the --init "
                   "model's.")  # fmt: skip
@click.option("--entropy-boost", type=FiniteRange(1), default=3.0, show_default=True,
              help="Entropy-loss weight multiplier at step 0, annealed to 1 (use 1 when warm-starting).")  # fmt: skip
@click.option("--entropy-weight", type=FiniteRange(0), default=0.1, show_default=True, help="LFQ entropy-loss weight.")
@click.option("--pixel-loss", type=click.Choice(["l1", "rmse"]), default="l1", show_default=True,
              help="Pixel term of the reconstruction loss: L1, or RMSE (the batch's root mean squared error: "
                   "optimises PSNR itself).")  # fmt: skip
@click.option("--ssim-weight", type=FiniteRange(0), default=0.2, show_default=True,
              help="Weight of the (1 - SSIM) term of the reconstruction loss.")
@click.option("--decorrelation-weight", type=FiniteRange(0), default=0.0, show_default=True,
              help="Weight of the bits' mean squared correlation inside a clip (asks each bit for new "
                   "information; logged as bit_correlation either way).")  # fmt: skip
@click.option("--commitment-weight", type=FiniteRange(0), default=0.1, show_default=True, help="Commitment-loss weight.")
@click.option("--distill-steps", type=click.IntRange(0), default=0, show_default=True,
              help="Bit-search steps per training step; the encoder is taught the searched bits (0 = off).")
@click.option("--distill-weight", type=FiniteRange(0), default=0.2, show_default=True,
              help="Weight of the encoder's cross-entropy against the searched bits.")
@click.option("--distill-lr", type=FiniteRange(0, min_open=True), default=0.1, show_default=True,
              help="Adam step of the per-step bit search.")
@click.option("--quality-mix", default=None, metavar="Q=P,...", callback=lambda ctx, param, value: _parse_mix(value),
              help="How often each quality's bit prefix is trained, e.g. low=0.35,medium=0.45,high=0.2 "
                   "[default: low=0.25,medium=0.45,high=0.3].")  # fmt: skip
@click.option("--encoder-blocks", default=None, metavar="N,N", callback=lambda ctx, param, value: _parse_blocks(value),
              help="Residual blocks per encoder level, e.g. 2,6 (grows the --init model's encoder; new blocks start "
                   "as identity; ignored when resuming OUT/state.pt) [default: the --init model's, else the "
                   "built-in architecture].")  # fmt: skip
@click.option("--decoder-blocks", default=None, metavar="N,N", callback=lambda ctx, param, value: _parse_blocks(value),
              help="Residual blocks per decoder level, finest first, e.g. 6,4 (6 at 1/4 resolution, 4 at 1/8); "
                   "grows the --init model's decoder the same way.")  # fmt: skip
@click.option("--drop-decoder-block", "drop_blocks", multiple=True, metavar="LEVEL.BLOCK",
              callback=lambda ctx, param, value: tuple(_parse_level_block(v) for v in value),
              help="Remove this residual block from the --init model's decoder before the warm start (LEVEL as in "
                   "--decoder-blocks, 0 = finest; BLOCK from 0); repeatable, applied in order. "
                   "benchmarks/block_importance.py measures what each block is worth.")  # fmt: skip
@click.option("--refine-blocks", default=None, metavar="N,N", callback=lambda ctx, param, value: _parse_blocks(value),
              help="Residual blocks per refiner stage (per-frame work), e.g. 3,1; added blocks start as identity.")
@click.option("--frame-split/--no-frame-split", default=None,
              help="The refiner also reads the coarsest decoder features split into frames (starts as a no-op) "
                   "[default: as the --init model].")  # fmt: skip
@click.option("--residual-bits", type=click.IntRange(0), default=0, show_default=True,
              help="Grow the --init model's last N sign bits into residual (magnitude) bits of its first N latent "
                   "channels; the top quality keeps them (docs/TOKENS.md). 0 = keep the model's design.")
@click.option("--residual-blocks", type=click.IntRange(0), default=1, show_default=True,
              help="Residual blocks of the decoder's residual reader (with --residual-bits).")
@click.option("--train-only", type=click.Choice(["residual"]), default=None,
              help="Train only the decoder's residual reader: every sign level keeps its tokens and pictures exactly.")
@click.option("--exclude", multiple=True, metavar="FILE_NAME",
              help="Keep this file (by name, e.g. kitten.mp4, or stem) out of the training material; repeatable. "
                   "The clips of lfqcodec.training.heldout are kept out already.")  # fmt: skip
@click.option("--train-on-held-out", is_flag=True,
              help="Let the clips the project measures and selects with (lfqcodec.training.heldout: armwrestling, kitten, "
                   "aquarium, city, bikes, carphone, vtest) into the training material.")  # fmt: skip
@click.option("--batch", type=click.IntRange(1), default=3, show_default=True, help="Video clips per step.")
@click.option("--frames", type=click.IntRange(1), default=33, show_default=True,
              help="Frames per training clip (1 + 4k); as long as the chunks the codec codes (--gop), or the "
                   "decoder never learns their later frames.")  # fmt: skip
@click.option("--size", type=click.IntRange(16), default=64, show_default=True, help="Crop side in pixels.")
@click.option("--max-stride", type=click.IntRange(1), default=2, show_default=True,
              help="Largest temporal stride of video crops (more motion per clip).")
@click.option("--pan-speed", type=FiniteRange(0), default=3.0, show_default=True,
              help="Fastest synthetic camera move over photos, pixels per frame.")
@click.option("--val-every", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--minutes", type=FiniteRange(0), default=0.0, show_default=True,
              help="Wall-clock budget: the cosine schedule runs over it and training stops at it (0 = --steps only).")
@click.option("--val-minutes", type=FiniteRange(0), default=0.0, show_default=True,
              help="Validate this often (and at step 0) instead of every --val-every steps (0 = by steps).")
@click.option("--val-frames", type=click.IntRange(1), default=33, show_default=True,
              help="Frames of each validation clip (33 = a whole default chunk).")
@click.option("--init", default=None, help="Warm-start from this model (name or path) when no run state exists.")
@click.option("--name", default="lfq-base", show_default=True, help="Name recorded in the weights.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="Training arithmetic: bf16 autocast (fp32 weights and quantizer losses) or fp32; auto = bf16 on "
                   "CUDA and on CPUs with native bf16 (AVX512-BF16/AMX, ~1.8x faster there), else fp32.")
@device_option
@handle_errors
def train(data_dirs, val_clips, out, steps, lr, warmup, freeze_decoder, freeze_encoder, entropy_boost, entropy_weight, pixel_loss,
          ssim_weight, decorrelation_weight, commitment_weight, distill_steps, distill_weight, distill_lr, quality_mix,
          encoder_blocks, decoder_blocks, drop_blocks, refine_blocks, frame_split, residual_bits, residual_blocks, train_only, exclude, train_on_held_out, batch, frames, size, max_stride, pan_speed, val_every, minutes, val_minutes, val_frames, init, name, precision, device):  # fmt: skip
    """Train the tokenizer (resumes from OUT/state.pt when present). Works with torchrun for multi-GPU."""
    import dataclasses
    import logging

    from ..model.checkpoint import load_model
    from ..model.config import TokenizerConfig
    from ..training.data import SamplerConfig
    from ..training.heldout import EXCLUDED
    from ..training.surgery import grown_config, residual_config
    from ..training.recipe import TrainConfig
    from ..training.train import train as run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    default_data = Path.home() / ".cache/lfqcodec/data"
    data_dirs = list(data_dirs) or [default_data / "video", default_data / "images"]
    val_clips = list(val_clips) or [default_data / "video/bikes.mp4", default_data / "video/carphone_pristine.mp4"]
    for path in [*data_dirs, *val_clips]:
        if not path.exists():
            raise LfqError(f"{path} not found (run scripts/fetch_data.sh first, or pass --data/--val)")
    model_cfg = load_model(init).tokenizer.cfg if init else TokenizerConfig()
    if drop_blocks and not init:
        raise LfqError("--drop-decoder-block needs --init (it edits a trained model)")
    try:
        model_cfg = grown_config(model_cfg, drop_blocks, refine_blocks, frame_split)
    except ValueError as exc:
        raise LfqError(f"--drop-decoder-block / --refine-blocks / --frame-split: {exc}") from None
    if residual_bits:
        if not init:
            raise LfqError("--residual-bits needs --init (it grows a trained model)")
        try:
            model_cfg = residual_config(model_cfg, residual_bits, residual_blocks)
        except ValueError as exc:
            raise LfqError(f"--residual-bits: {exc}") from None
    for option, blocks in (("encoder_blocks", encoder_blocks), ("decoder_blocks", decoder_blocks)):
        if blocks:
            try:
                model_cfg = dataclasses.replace(model_cfg, **{option: blocks})
            except ValueError as exc:
                raise LfqError(f"--{option.replace('_', '-')}: {exc}") from None
    run_training(
        model_cfg,
        TrainConfig(steps=steps, lr=lr, warmup=warmup, entropy_boost=entropy_boost, entropy_weight=entropy_weight,
                    commitment_weight=commitment_weight, pixel_loss=pixel_loss, ssim_weight=ssim_weight,
                    decorrelation_weight=decorrelation_weight, batch=batch, distill_steps=distill_steps,
                    distill_weight=distill_weight, distill_lr=distill_lr,
                    **({"quality_probs": quality_mix} if quality_mix else {}), val_every=val_every,
                    val_frames=val_frames, bf16=None if precision == "auto" else precision == "bf16",
                    freeze_decoder=freeze_decoder, freeze_encoder=freeze_encoder, train_only=train_only or "", minutes=minutes, val_minutes=val_minutes),
        SamplerConfig(frames=frames, size=size, max_stride=max_stride, pan_speed=pan_speed), data_dirs, val_clips, out, init=init, name=name, device=device,
        exclude=tuple(exclude) + (() if train_on_held_out else tuple(sorted(EXCLUDED))), drop_decoder_blocks=drop_blocks,
    )  # fmt: skip
