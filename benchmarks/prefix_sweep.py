"""PSNR and payload rate of every bit-prefix length of one model on held-out clips: which operating
points pay (issue: each --quality step should buy >= 1 dB over the one below).

    python benchmarks/prefix_sweep.py [CLIP ...] [--model lfq-base] [--frames 17] [--max-side 320]
        [--bits 4,8,12,16,20,24,32] [--out benchmarks/results/prefix-sweep-lfq-base.json]

Each clip's first ``--frames`` frames (centre crop of at most ``--max-side``) are encoded once; the
decoder then decodes the first k bits of every token for each k (prefixes the model was not trained on
decode too, less well). Rate = packed + zstd payload (the 1.x coder), as validation reports it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

from lfqcodec.format.bitpack import compressed_size
from lfqcodec.model.checkpoint import load_model
from lfqcodec.training.data import to_model_range
from lfqcodec.training.heldout import measuring_clips
from lfqcodec.base.metrics import psnr
from lfqcodec.training.validation import load_validation

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="*", type=Path, default=measuring_clips())
    parser.add_argument("--model", default=None)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--max-side", type=int, default=320)
    parser.add_argument("--bits", default="4,8,12,16,20,24,32")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "prefix-sweep-lfq-base.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model(args.model)
    rows = []
    for name, frames in load_validation(args.clips, frames=args.frames, max_side=args.max_side):
        video = to_model_range(frames).transpose(0, 1)[None]
        bits = model.tokenizer.encode(video)
        reference = frames.permute(0, 3, 1, 2).float()
        for keep in (int(b) for b in args.bits.split(",")):
            decoded = ((model.tokenizer.decode(bits[:, :keep]).clamp(-1, 1) + 1) * 127.5).round()[0].transpose(0, 1)
            bpp = compressed_size(bits[0, :keep].numpy()) * 8 / frames[..., 0].numel()
            rows.append({"clip": name, "bits": keep, "psnr": round(psnr(reference, decoded), 3), "bpp": round(bpp, 5)})
            print(f"{name:14s} {keep:3d} bits {rows[-1]['psnr']:6.2f} dB {bpp:.4f} bpp", flush=True)
    record = {"model": model.name, "weights_sha256": model.sha256, "frames": args.frames, "max_side": args.max_side,
              "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
              "command": "python benchmarks/prefix_sweep.py", "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
