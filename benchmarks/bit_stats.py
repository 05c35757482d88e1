"""How much new information the later bits of a token carry: the evidence behind "high is nearly useless".

    python benchmarks/bit_stats.py [CLIP ...] [--frames 33] [--model lfq-base] [--out FILE.json]

For each clip's first ``--frames`` frames (one chunk, cropped to the token grid) the network encoder's
bits are collected over all tokens and reported:

- ``p_one``: the smallest / largest share of ones of any bit (a constant bit wastes its rate);
- ``mean_abs_corr``: the mean absolute correlation between two different bits, within bits 1-16
  (``medium``), within 17-32 and between the two halves;
- ``high_from_medium_accuracy``: how well bits 17-32 are predicted from bits 1-16 by least squares
  (sign of a linear fit, with bias), against always guessing the bit's majority value: the closer
  the two, the more new information the high bits carry;
- PSNR of the decode from bits 1-16 only (``medium``), from all 32 (``high``), and from all 32 with
  bits 17-32 replaced by random or flipped bits: how much the decoder relies on them.

Prints and (with ``--out``) writes one JSON object with the command, date, machine and model hash.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from lfqcodec.model.checkpoint import load_model
from lfqcodec.training.data import to_model_range
from lfqcodec.base.metrics import psnr
from lfqcodec.model.tokenizer import TokenizerNet
from lfqcodec.io.videoio import read_video_frames

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared/data/video"


def first_chunk(path: Path, frames: int, tokenizer: TokenizerNet) -> torch.Tensor:
    """The clip's first ``frames`` frames (1 + 4k, cropped to the token grid) as ``1 x 3 x T x H x W`` in [-1, 1]."""
    collected = []
    for frame in read_video_frames(path):
        collected.append(frame)
        if len(collected) == frames:
            break
    f, s = tokenizer.cfg.temporal_factor, tokenizer.cfg.spatial_factor
    arr = np.stack(collected[: 1 + (len(collected) - 1) // f * f])
    arr = np.ascontiguousarray(arr[:, : arr.shape[1] // s * s, : arr.shape[2] // s * s])
    return to_model_range(torch.from_numpy(arr)).transpose(0, 1)[None]


def linear_prediction_accuracy(inputs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Mean accuracy of predicting each 0/1 target column from the 0/1 inputs by a least-squares fit,
    and the mean accuracy of always guessing each column's majority value."""
    design = np.c_[inputs * 2 - 1, np.ones(len(inputs))]
    fitted, majority = [], []
    for column in targets.T:
        weights, *_ = np.linalg.lstsq(design, column * 2 - 1, rcond=None)
        fitted.append(((design @ weights > 0) == (column > 0)).mean())
        majority.append(max(column.mean(), 1 - column.mean()))
    return float(np.mean(fitted)), float(np.mean(majority))


def clip_stats(tokenizer: TokenizerNet, video: torch.Tensor, split: int) -> dict:
    with torch.no_grad():
        bits = tokenizer.encode(video)
        as_uint8 = lambda v: ((v.clamp(-1, 1) + 1) * 127.5).round()
        decode = lambda b: psnr(as_uint8(video), as_uint8(tokenizer.decode(b)))
        random_high, flipped_high = bits.clone(), bits.clone()
        random_high[:, split:] = torch.rand(random_high[:, split:].shape) > 0.5
        flipped_high[:, split:] = ~flipped_high[:, split:]
        psnrs = {
            "medium": decode(bits[:, :split]),
            "high": decode(bits),
            "high_random_upper": decode(random_high),
            "high_flipped_upper": decode(flipped_high),
        }
    num_bits = bits.shape[1]
    table = bits.movedim(1, -1).reshape(-1, num_bits).float().numpy()
    off_diagonal = np.abs(np.corrcoef(table.T) - np.eye(num_bits))
    lower, upper = slice(0, split), slice(split, num_bits)
    within = lambda part, n: float(off_diagonal[part, part].sum() / (n * (n - 1)))
    fitted, majority = linear_prediction_accuracy(table[:, lower], table[:, upper])
    p_one = table.mean(0)
    return {
        "tokens": len(table),
        "p_one": {"min": round(float(p_one.min()), 3), "max": round(float(p_one.max()), 3)},
        "mean_abs_corr": {
            f"within_1_{split}": round(within(lower, split), 3),
            f"within_{split + 1}_{num_bits}": round(within(upper, num_bits - split), 3),
            "between": round(float(off_diagonal[lower, upper].mean()), 3),
        },
        "high_from_medium_accuracy": {"linear_fit": round(fitted, 3), "majority": round(majority, 3)},
        "psnr_rgb": {name: round(value, 2) for name, value in psnrs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", type=Path, default=[SHARED / "bikes.mp4", SHARED / "carphone_pristine.mp4"])
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model(args.model)
    tokenizer = loaded.tokenizer.eval()
    split = tokenizer.cfg.quality_bits["medium"]
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "model": {"name": loaded.name, "sha256": loaded.sha256},
        "frames": args.frames,
        "clips": {clip.name: clip_stats(tokenizer, first_chunk(clip, args.frames, tokenizer), split) for clip in args.clips},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
