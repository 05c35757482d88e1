"""Training's validation measure for any model file: PSNR / MS-SSIM / payload bits per pixel per
quality on centre crops of the first ``--frames`` frames of the held-out clips (what ``lfqcodec
train`` logs to ``val.jsonl``), so weights from different training runs can be compared on one
footing; and VMAF (``vmaf_v0.6.1``, :mod:`lfqcodec.bench.vmaf`, needs the bench extra) of the same
reconstructions, per clip and quality, as ``vmaf`` next to training's numbers.

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

from lfqcodec.model.checkpoint import load_model
from lfqcodec.training.data import to_model_range
from lfqcodec.base.errors import LfqError
from lfqcodec.training.validation import load_validation, validate
from lfqcodec.model.tokenizer import TokenizerNet
from lfqcodec.bench.vmaf import settings as vmaf_settings
from lfqcodec.bench.vmaf import vmaf

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared/data/video"


@torch.no_grad()
def add_vmaf(tokenizer: TokenizerNet, clips: list[tuple[str, torch.Tensor]], result: dict) -> None:
    """Decode each clip (``T x H x W x 3`` uint8) at each quality as :func:`validate` does and add
    ``vmaf`` to ``result``: per clip (``result[q]["clips"]``) and the mean over clips (``result[q]``)."""
    tokenizer.eval()
    for name, frames in clips:
        bits = tokenizer.encode(to_model_range(frames).transpose(0, 1)[None])  # 1 x 3 x T x H x W in [-1, 1]
        for quality, keep in tokenizer.cfg.quality_bits.items():
            recon = tokenizer.decode(bits[:, :keep])[0]  # 3 x T x H x W in [-1, 1]
            decoded = ((recon.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 3, 0).to(torch.uint8).numpy()
            row = next(r for r in result[quality]["clips"] if r["clip"] == name)
            row["vmaf"] = vmaf(frames.numpy(), decoded).mean
    for quality in tokenizer.cfg.quality_bits:
        rows = result[quality]["clips"]
        result[quality]["vmaf"] = sum(r["vmaf"] for r in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", type=Path, default=[SHARED / "bikes.mp4", SHARED / "carphone_pristine.mp4"])
    parser.add_argument("--model", default=None)
    parser.add_argument("--frames", type=int, default=29)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "validate-lfq-base-29f.json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        vmaf_record = vmaf_settings()
    except LfqError as exc:
        sys.exit(f"validate.py: error: {exc}")
    model = load_model(args.model)
    clips = load_validation(args.clips, frames=args.frames)
    result = validate(model.tokenizer.float(), clips, torch.device("cpu"))
    add_vmaf(model.tokenizer, clips, result)
    record = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], HERE.parent), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
        "model": {"name": model.name, "sha256": model.sha256},
        "frames": args.frames,
        "vmaf": vmaf_record,
        "result": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(", ".join(f"{q} {result[q]['psnr']:.2f} dB VMAF {result[q]['vmaf']:.1f} {result[q]['bpp']:.4f} bpp" for q in model.config.quality_bits))


if __name__ == "__main__":
    main()
