"""Which bits the encoder-side search changes: the evidence for distilling the search into the encoder.

    python benchmarks/search_flips.py [CLIP] [--frames 33] [--quality medium] [--steps 20]

Encodes the clip's first ``--frames`` frames (one chunk; cropped to the token grid) with the network
encoder, runs ``lfqcodec.codec.search.search_bits`` on the kept bits, and reports the fraction of bits the
search flipped (per bit, first latent frame vs. later ones) and the encoder's mean ``|z|`` (latent
magnitude, 1 on average) on flipped vs. kept bits. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import torch
from bit_stats import first_chunk  # this folder: the same first-chunk loader

from lfqcodec.model.checkpoint import load_model
from lfqcodec.codec.search import SearchConfig, search_bits

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", nargs="?", type=Path, default=HERE.parent / "tests/data/carphone_33f.mp4")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    loaded = load_model(args.model)
    tokenizer = loaded.tokenizer.eval()
    keep = tokenizer.cfg.quality_bits[args.quality]
    video = first_chunk(args.clip, args.frames, tokenizer)
    count, height, width = video.shape[2:]
    with torch.no_grad():
        latents = tokenizer.encoder(video)
    searched = search_bits(tokenizer, video, latents, keep, SearchConfig(steps=args.steps))[:, :keep]
    plain = latents[:, :keep] > 0
    flipped = searched != plain
    magnitude = latents[:, :keep].abs()
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "model": {"name": loaded.name, "sha256": loaded.sha256},
        "clip": args.clip.name,
        "frames": count,
        "size": [width, height],
        "quality": args.quality,
        "search_steps": args.steps,
        "flipped": round(flipped.float().mean().item(), 4),
        "flipped_per_bit": [round(v, 4) for v in flipped.float().mean(dim=(0, 2, 3, 4)).tolist()],
        "flipped_first_latent_frame": round(flipped[:, :, 0].float().mean().item(), 4),
        "flipped_later_latent_frames": round(flipped[:, :, 1:].float().mean().item(), 4),
        "mean_abs_latent_flipped": round(magnitude[flipped].mean().item(), 4),
        "mean_abs_latent_kept": round(magnitude[~flipped].mean().item(), 4),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
