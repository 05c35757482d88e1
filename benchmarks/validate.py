"""Training's validation measure for any model file: PSNR / MS-SSIM / payload bits per pixel per
quality on centre crops of the first ``--frames`` frames of the held-out clips (what ``lfqcodec
train`` logs to ``val.jsonl``), so weights from different sessions can be compared on one footing.

    python benchmarks/validate.py [--model lfq-base] [--frames 29] [--out benchmarks/results/validate-lfq-base-29f.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

from lfqcodec.checkpoint import load_model
from lfqcodec.train import load_validation, validate

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared/data/video"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", type=Path, default=[SHARED / "bikes.mp4", SHARED / "carphone_pristine.mp4"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--frames", type=int, default=29)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "validate-lfq-base-29f.json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    model = load_model(args.model)
    result = validate(model.tokenizer.float(), load_validation(args.clips, frames=args.frames), torch.device("cpu"))
    record = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], HERE.parent), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
        "model": {"name": model.name, "sha256": model.sha256},
        "frames": args.frames,
        "result": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(", ".join(f"{q} {result[q]['psnr']:.2f} dB {result[q]['bpp']:.4f} bpp" for q in model.config.quality_bits))


if __name__ == "__main__":
    main()
