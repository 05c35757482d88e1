"""Diagnostic: how far can the shipped architecture fit ONE clip when trained on that clip itself?

    python benchmarks/probes/overfit_probe.py --part all       # encoder + decoder
    python benchmarks/probes/overfit_probe.py --part decoder   # the shipped encoder's bits, decoder trained

The weights this makes are never shipped (they have seen the validation clip): the point is to tell
a limit of the architecture (the fit stalls near the shipped model's score) from a limit of what
training on other material teaches (the fit climbs well past it). Training: random 17-frame windows
of the clip's first 29 frames (whole frames, no crops), medium or high bit prefix at random, AdamW
lr 2e-4, bf16 autocast; validation as in training (first 29 frames, EMA-free weights).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from lfqcodec.model.checkpoint import load_model
from lfqcodec.training.data import to_model_range
from lfqcodec.training.recipe import TrainConfig, compute_losses
from lfqcodec.training.validation import load_validation, validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=Path.home() / ".cache/lfqcodec/data/video/carphone_pristine.mp4")
    parser.add_argument("--model", default="models/lfq-base.safetensors")
    parser.add_argument("--part", choices=["all", "decoder"], default="all", help="what is trained")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50, help="validate every N steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON record of the curve")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    loaded = load_model(args.model)
    model = loaded.tokenizer.float()
    clips = load_validation([args.clip], 29)
    frames = clips[0][1]
    params = model.decoder.parameters() if args.part == "decoder" else model.parameters()
    optimizer = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.99), weight_decay=0.0)
    cfg = TrainConfig()
    curve = []

    def record(step: int, seconds: float) -> None:
        result = validate(model, clips, torch.device("cpu"))
        row = {"step": step, "seconds": round(seconds), **{q: round(result[q]["psnr"], 3) for q in ("low", "medium", "high")}}
        curve.append(row)
        print(json.dumps(row), flush=True)

    start_time = time.time()
    record(0, 0)
    for step in range(1, args.steps + 1):
        model.train()
        start = int(rng.integers(0, len(frames) - 17 + 1)) if rng.random() < 0.5 else 0
        video = to_model_range(frames[start : start + 17]).transpose(0, 1)[None]
        keep = torch.tensor([int(rng.choice([16, 32]))])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _, _ = compute_losses(model, video, keep, cfg, step=10**6)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.every == 0:
            record(step, time.time() - start_time)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record_json = {
            "command": "python benchmarks/probes/overfit_probe.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
            "model_sha256": loaded.sha256, "clip": str(args.clip.name), "part": args.part, "curve": curve,
        }  # fmt: skip
        args.out.write_text(json.dumps(record_json, indent=1) + "\n")


if __name__ == "__main__":
    main()
