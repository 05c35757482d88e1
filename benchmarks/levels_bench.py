"""Level-by-level rate and distortion of two models in one run: bpp, RGB-PSNR and VMAF per clip and level.

    python benchmarks/levels_bench.py --base BASE.safetensors --model NEW.safetensors CLIP ... \\
        [--frames 33] [--out benchmarks/results/levels/levels.json]

Each model encodes each clip's first ``--frames`` frames at each of its quality levels through the real
encoder and container (whole files, context-coded where an entropy model for the tokenizer is
installed in ``models/``), decodes them, and is compared with the source (:mod:`eval_model`). The
table printed at the end gives per-clip rows and means, each level's gain over the level below, and
its rate as a multiple of the level below. A picture stacks one moving frame of the first clip at
every level of both models (source on the left; JPEG at quality 92, beside the JSON).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import lfqcodec  # noqa: E402
from eval_model import evaluate, read_frames  # noqa: E402
from lfqcodec.model.checkpoint import load_model  # noqa: E402
from lfqcodec.model.inference import cpu_flags  # noqa: E402


def level_table(rows: list[dict], levels: list[str]) -> list[str]:
    """Markdown lines: one row per clip and level, then the means with gain and rate ratio per step up."""
    lines = ["| clip | level | bpp | PSNR dB | VMAF |", "|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: levels.index(r["quality"])):
        lines.append(f"| {r['clip']} | {r['quality']} | {r['bpp']:.4f} | {r['psnr_rgb']:.2f} | {r['vmaf']:.1f} |")
    means = {q: {k: float(np.mean([r[k] for r in rows if r["quality"] == q])) for k in ("bpp", "psnr_rgb", "vmaf")}
             for q in levels}  # fmt: skip
    lines += ["", "| level | bpp | PSNR dB | VMAF | over the level below |", "|---|---|---|---|---|"]
    for i, q in enumerate(levels):
        m = means[q]
        step = ""
        if i:
            below = means[levels[i - 1]]
            step = f"{m['psnr_rgb'] - below['psnr_rgb']:+.2f} dB at {m['bpp'] / below['bpp']:.2f}x"
        lines.append(f"| {q} | {m['bpp']:.4f} | {m['psnr_rgb']:.2f} | {m['vmaf']:.1f} | {step} |")
    return lines


def moving_frame_picture(clip: Path, frames: int, models: list[tuple[str, str]], out: Path, frame: int) -> None:
    """Source | each level of each model, frame ``frame`` of ``clip``, one row per model (PNG)."""
    from PIL import Image

    source = read_frames(clip, frames)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _, model in models:
            tiles = [source[frame]]
            bits = load_model(model).config.quality_bits
            for quality in sorted(bits, key=bits.get):
                lfq, back = Path(tmp) / "x.lfq", Path(tmp) / "x.mkv"
                lfqcodec.encode_file(clip, lfq, model=model, quality=quality, device="cpu", max_frames=frames,
                                     overwrite=True)  # fmt: skip
                lfqcodec.decode_file(lfq, back, device="cpu", model=model, overwrite=True)
                tiles.append(read_frames(back, frames)[frame])
            rows.append(tiles)
    width = max(len(r) for r in rows)
    h, w = source.shape[1:3]
    canvas = np.full((len(rows) * (h + 4), width * (w + 4), 3), 255, np.uint8)
    for i, tiles in enumerate(rows):
        for j, tile in enumerate(tiles):
            canvas[i * (h + 4) : i * (h + 4) + h, j * (w + 4) : j * (w + 4) + w] = tile
    Image.fromarray(canvas).save(out, quality=92)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--base", required=True, help="the model to compare against (e.g. the previous version)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--gop", type=int, default=33)
    parser.add_argument("--picture-frame", type=int, default=14, help="the moving frame of the first clip shown")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "levels" / "levels.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    record: dict = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], HERE.parent), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
        f"CPU flags {' '.join(sorted(f for f in cpu_flags() if f.startswith(('avx', 'amx'))))}",
        "models": {},
    }
    tables = []
    for label, model in (("base", args.base), ("model", args.model)):
        loaded = load_model(model)
        levels = sorted(loaded.config.quality_bits, key=loaded.config.quality_bits.get)  # fewest bits first
        with tempfile.TemporaryDirectory() as pictures:  # eval_model's per-level side-by-sides: not kept
            rows = evaluate(args.clips, args.frames, model, args.gop, Path(pictures), qualities=tuple(levels))
        for r in rows:
            r.pop("psnr_per_frame", None)
        record["models"][label] = {"path": str(model), "sha256": loaded.sha256, "design": loaded.config.design,
                                   "quality_bits": loaded.config.quality_bits, "rows": rows}  # fmt: skip
        tables.append(f"### {label}: {loaded.name} {loaded.sha256[:8]} ({loaded.config.design})")
        tables += level_table(rows, levels) + [""]
    record["table"] = "\n".join(tables)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(record["table"])
    moving_frame_picture(args.clips[0], args.frames, [("base", args.base), ("model", args.model)],
                         args.out.with_suffix(".jpg"), args.picture_frame)  # fmt: skip


if __name__ == "__main__":
    main()
