"""Design probe for the per-clip decoder update: which parameters, how many steps, which step size,
how many quantiser bits. For each clip (a central crop, first frames), the shipped encoder's bits at
``--quality`` are fixed; each candidate is fitted, quantised, and scored by the PSNR gained over
the shipped decoder and the payload's bytes (next to the chunk payload's bytes).

    python benchmarks/update_probe.py CLIP [CLIP ...] --frames 33 --crop 256 --out benchmarks/results/update/probe.json

Candidates are ``name:norms,biases,lora,refiner,bits,steps,lr`` (``--candidates``, comma-separated
groups separated by spaces), e.g. ``nb:1,1,0,0,8,60,2e-3``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from lfqcodec.adapt import UpdateSpec
from lfqcodec.adapt_fit import FitConfig
from lfqcodec.api import Codec, select_device
from lfqcodec.checkpoint import load_model
from lfqcodec.preset import Preset, RunEncoder, psnr_of

DEFAULT = [
    "nb:1,1,0,0,8,60,2e-3",
    "nb-lr5:1,1,0,0,8,60,5e-3",
    "lora2:1,1,2,0,8,60,2e-3",
    "ref:0,0,0,1,8,60,1e-3",
    "nb6:1,1,0,0,6,60,2e-3",
]


def load_clip(path: Path, frames: int, crop: int | None) -> list[np.ndarray]:
    if path.suffix == ".npy":
        video = np.load(path)[:frames]
    else:
        import av

        with av.open(str(path)) as container:
            video = np.stack([f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(frames))])
    if crop:
        h, w = video.shape[1:3]
        ch, cw = min(crop, h) // 8 * 8, min(crop, w) // 8 * 8
        y, x = (h - ch) // 2, (w - cw) // 2
        video = video[:, y : y + ch, x : x + cw]
    return list(np.ascontiguousarray(video))


def parse(candidate: str) -> tuple[str, UpdateSpec, FitConfig]:
    name, values = candidate.split(":")
    n, b, r, ref, bits, steps, lr = values.split(",")
    spec = UpdateSpec(bool(int(n)), bool(int(b)), int(r), bool(int(ref)), int(bits))
    return name, spec, FitConfig(steps=int(steps), lr=float(lr))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--gop", type=int, default=33)
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--candidates", nargs="+", default=DEFAULT)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    loaded = load_model(None)
    codec = Codec(loaded, select_device(args.device))
    keep = loaded.config.quality_bits[args.quality]
    rows = []
    for clip in args.clips:
        frames = load_clip(clip, args.frames, args.crop)
        s = loaded.config.spatial_factor
        grid = (-(-frames[0].shape[0] // s), -(-frames[0].shape[1] // s))
        for name, spec, fit in [parse(c) for c in args.candidates]:
            torch.manual_seed(0)
            run = RunEncoder(codec, grid, keep, Preset("probe", fit=fit, spec=spec), zstd_level=19)
            chunks = [run.prepare(frames[i : i + args.gop]) for i in range(0, len(frames), args.gop)]
            started = time.time()
            result = run.encode(chunks)
            row = {"clip": clip.stem, "candidate": name, "spec": spec.__dict__, "steps": fit.steps, "lr": fit.lr,
                   "seconds": round(time.time() - started, 1), **result.stats}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": "python benchmarks/update_probe.py " + " ".join(map(str, [*args.clips])) +
                  f" --frames {args.frames} --crop {args.crop} --device {args.device} --candidates " + " ".join(args.candidates),
                  "machine": platform.node() + " " + platform.processor(), "torch": torch.__version__,
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
                  "psnr_of": psnr_of.__doc__, "rows": rows}  # fmt: skip
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
