"""The prepared GPU training run: one command for a briefly lent GPU machine.

    python3 -m lfqcodec.training.gpu_run --pack .gpu-pack --out "$OUT" --minutes 8

It trains from the shipped weights (or ``--init``) on a pack made by ``scripts/pack_training_data.py``
(no PyAV needed there: the pack is read with OpenCV), in bf16 autocast with large batches and batches
made by worker processes, for a wall-clock budget over which the learning-rate cosine runs. It
validates at the start and every ``--val-minutes``; after each validation the best EMA weights so far
go to ``--out`` as fp16 parts of at most 15 MiB (``lfq-base.safetensors.part-NN`` and ``.parts.json``:
join them with ``python -m lfqcodec.training.shards join``), with ``train.jsonl``, ``val.jsonl`` and
``summary.txt``: at most 7 files, so a run cut short still returns its weights. It ends by printing a
short table (PSNR and payload bits per pixel per quality, from start to end).

The same code runs on the CPU at toy scale in the test suite (``tests/test_gpu_run.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import torch

from .data import SamplerConfig
from .datapack import read_pack
from ..base.errors import LfqError
from .shards import split_file
from .recipe import TrainConfig
from .train import train


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m lfqcodec.training.gpu_run", description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", type=Path, required=True, help="pack folder (scripts/pack_training_data.py)")
    p.add_argument("--out", type=Path, required=True, help="where weights parts and logs go (the device's $OUT)")
    p.add_argument("--work", type=Path, default=Path("/tmp/lfq-gpu-run"), help="run state and decoded material")
    p.add_argument("--init", default="models/lfq-base.safetensors", help="warm start (name or path)")
    p.add_argument("--name", default="lfq-base")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock training budget")
    p.add_argument("--val-minutes", type=float, default=1.5)
    p.add_argument("--steps", type=int, default=10**9, help="cap on steps (the budget normally ends the run)")
    p.add_argument("--batch", type=int, default=64, help="video clips per step")
    p.add_argument("--image-batch", type=int, default=128, help="still images per image step")
    p.add_argument("--size", type=int, default=128, help="crop side of video clips")
    p.add_argument("--image-size", type=int, default=192)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=150)
    p.add_argument("--workers", type=int, default=12, help="batch-making worker processes")
    p.add_argument("--quality-mix", default="low=0.3,medium=0.5,high=0.2")
    p.add_argument("--pixel-loss", default="rmse", choices=["l1", "rmse"])
    p.add_argument("--drop-decoder-block", action="append", default=[], metavar="LEVEL.BLOCK")
    p.add_argument("--refine-blocks", default=None, metavar="N,N")
    p.add_argument("--frame-split", action="store_true")
    p.add_argument("--residual-bits", type=int, default=0,
                   help="grow the --init model's last N sign bits into residual (magnitude) bits (lfqcodec.model.quantizer)")
    p.add_argument("--residual-blocks", type=int, default=1, help="blocks of the decoder's residual reader")
    p.add_argument("--train-only", default="", choices=["", "residual"],
                   help="residual: train only the decoder's residual reader (sign levels stay exact)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    return p.parse_args(argv)


def model_config(args: argparse.Namespace, drops: tuple[tuple[int, int], ...]):
    from ..model.checkpoint import load_model
    from .surgery import grown_config, residual_config

    refine = tuple(int(n) for n in args.refine_blocks.split(",")) if args.refine_blocks else None
    cfg = grown_config(load_model(args.init).config, drops, refine, True if args.frame_split else None)
    return residual_config(cfg, args.residual_bits, args.residual_blocks) if args.residual_bits else cfg


def summary_table(val_log: Path) -> str:
    """One line per validation: step, minutes, and PSNR / bpp per quality."""
    rows = [json.loads(line) for line in val_log.read_text().splitlines() if line.strip()]
    if not rows:
        return "no validation ran"
    qualities = [q for q in rows[0] if isinstance(rows[0][q], dict)]
    head = f"{'step':>7} {'min':>5} " + " ".join(f"{q + ' dB':>10} {'bpp':>7}" for q in qualities)
    lines = [head]
    for row in rows:
        cells = " ".join(f"{row[q]['psnr']:10.2f} {row[q]['bpp']:7.4f}" for q in qualities)
        lines.append(f"{row['step']:7d} {row.get('elapsed', 0) / 60:5.1f} {cells}")
    return "\n".join(lines)


def export(out_dir: Path, run_dir: Path, name: str) -> None:
    """Best weights as parts, the logs and the table into ``out_dir`` (replacing the previous export)."""
    best = run_dir / f"{name}.safetensors"
    if best.exists():
        for old in out_dir.glob(f"{name}.safetensors.part-*"):
            old.unlink()
        split_file(best, out_dir)
    for log_name in ("train.jsonl", "val.jsonl"):
        if (run_dir / log_name).exists():
            shutil.copyfile(run_dir / log_name, out_dir / log_name)
    if (run_dir / "val.jsonl").exists():
        (out_dir / "summary.txt").write_text(summary_table(run_dir / "val.jsonl") + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    try:
        drops = tuple(tuple(int(n) for n in d.split(".")) for d in args.drop_decoder_block)
        mix = {k: float(v) for k, v in (item.split("=") for item in args.quality_mix.split(","))}
        args.out.mkdir(parents=True, exist_ok=True)
        args.work.mkdir(parents=True, exist_ok=True)
        material = read_pack(args.pack, args.work / "cache")
        if torch.cuda.is_available():
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        train_cfg = TrainConfig(
            steps=args.steps, batch=args.batch, image_batch=args.image_batch, lr=args.lr, warmup=args.warmup,
            entropy_boost=1.0, pixel_loss=args.pixel_loss, quality_probs=mix, log_every=20, minutes=args.minutes,
            val_minutes=args.val_minutes, checkpoint_minutes=2.0, loader_workers=args.workers,
            val_frames=max(len(v) for _, v in material[1]),
            bf16=None if args.precision == "auto" else args.precision == "bf16", train_only=args.train_only,
        )  # fmt: skip
        sampler_cfg = SamplerConfig(frames=args.frames, size=args.size, image_size=args.image_size, max_stride=4,
                                    pan_speed=6.0)  # fmt: skip
        train(model_config(args, drops), train_cfg, sampler_cfg, [], [], args.work, init=args.init, name=args.name,
              device=args.device, drop_decoder_blocks=drops, material=material,
              on_validated=lambda run_dir, result: export(args.out, run_dir, args.name))  # fmt: skip
        export(args.out, args.work, args.name)
    except LfqError as exc:
        sys.exit(f"lfqcodec: error: {exc}")
    print(summary_table(args.work / "val.jsonl"))


if __name__ == "__main__":
    main()
