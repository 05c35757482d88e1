"""What each residual block of a model's decoder is worth: PSNR with that block skipped, before any
training (how `lfqcodec train --drop-decoder-block` chooses what to remove).

    python benchmarks/block_importance.py [--model lfq-base] [--frames 17] [--max-side 320] [--bits 16]
        [--out benchmarks/results/block-importance-lfq-base.json]

On the selection clips (bikes, carphone): their first ``--frames`` frames, centre crop of at most
``--max-side``, ``--bits`` bits per token (16 = --quality medium).
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch
from torch import nn

from lfqcodec.model.checkpoint import load_model
from lfqcodec.training.data import to_model_range
from lfqcodec.base.metrics import psnr
from lfqcodec.training.validation import load_validation

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared/data/video"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--max-side", type=int, default=320)
    parser.add_argument("--bits", type=int, default=16)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "block-importance-lfq-base.json")
    args = parser.parse_args()
    model = load_model(args.model)
    tokenizer = model.tokenizer
    clips = []
    for name, frames in load_validation([SHARED / "bikes.mp4", SHARED / "carphone_pristine.mp4"], args.frames, args.max_side):
        video = to_model_range(frames).transpose(0, 1)[None]
        clips.append((name, frames.permute(0, 3, 1, 2).float(), tokenizer.encode(video)[:, : args.bits]))

    def score() -> dict[str, float]:
        out = {}
        for name, reference, bits in clips:
            decoded = ((tokenizer.decode(bits).clamp(-1, 1) + 1) * 127.5).round()[0].transpose(0, 1)
            out[name] = round(psnr(reference, decoded), 2)
        return out

    rows = [{"block": None, "psnr": score()}]
    levels = tokenizer.decoder.levels  # coarsest first; the config counts finest first
    for index, level in enumerate(levels):
        config_level = len(levels) - 1 - index
        for block in range(len(level)):
            kept, level[block] = level[block], nn.Identity()
            rows.append({"block": f"{config_level}.{block}", "psnr": score()})
            level[block] = kept
            print(rows[-1], flush=True)
    record = {"model": model.name, "weights_sha256": model.sha256, "bits": args.bits, "frames": args.frames,
              "date": datetime.date.today().isoformat(), "command": "python benchmarks/block_importance.py",
              "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
