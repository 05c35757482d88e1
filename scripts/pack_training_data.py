#!/usr/bin/env python3
"""Pack the training material for the prepared GPU run (lfqcodec.training.gpu_run) into .gpu-pack/.

    python scripts/pack_training_data.py [--data ~/.cache/lfqcodec/data] [--out .gpu-pack]

Takes the clips and photos that scripts/fetch_data.sh gathered, minus the clips held out for measuring
(lfqcodec.training.heldout: they choose nothing and train nothing), re-encodes them compactly (lfqcodec.training.datapack)
and fits the pack into what a device call may carry: 64 MiB minus the files of this checkout that travel
(tracked and untracked-not-ignored), minus a margin. bikes and carphone go in as validation clips (the
clips that select the weights), as in `lfqcodec train`'s defaults.

Then, on the GPU machine (device tool `run`, carry [".gpu-pack"], timeout 600):
    python3 -m lfqcodec.training.gpu_run --pack .gpu-pack --out "$OUT" --minutes 8
and here: python -m lfqcodec.training.shards join <files_at>/lfq-base.safetensors.parts.json
"""

from __future__ import annotations

import argparse
import logging
import subprocess
from pathlib import Path

from lfqcodec.training.data import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from lfqcodec.training.datapack import PackConfig, build_pack
from lfqcodec.training.heldout import is_excluded

VALIDATION = ("bikes.mp4", "carphone_pristine.mp4")  # model selection
CARRY_LIMIT = 64 << 20
MARGIN = 3 << 20


def travelling_bytes(repo: Path) -> int:
    """Bytes of the files a device call sends: tracked plus untracked files git does not ignore."""
    names = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           check=True, capture_output=True).stdout.split(b"\0")  # fmt: skip
    return sum((repo / n.decode()).stat().st_size for n in names if n and (repo / n.decode()).is_file())


def main() -> None:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache/lfqcodec/data")
    parser.add_argument("--out", type=Path, default=repo / ".gpu-pack")
    parser.add_argument("--max-photos", type=int, default=40)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    files = sorted(p for p in (args.data / "video").iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    videos = [p for p in files if not is_excluded(p)]  # validation clips are excluded there too
    validation = [args.data / "video" / name for name in VALIDATION]
    photos = sorted(p for p in (args.data / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    photos = sorted(photos, key=lambda p: -p.stat().st_size)[: args.max_photos]  # the largest: most detail
    budget = CARRY_LIMIT - travelling_bytes(repo) - MARGIN
    manifest = build_pack(videos, photos, validation, args.out, PackConfig(budget_bytes=budget))
    frames = sum(v["frames"] for v in manifest["videos"])
    print(f"{args.out}: {len(manifest['videos'])} clips ({frames} frames, CRF {manifest['crf']}), "
          f"{len(manifest['photos'])} photos, {len(manifest['validation'])} validation clips, "
          f"{manifest['bytes'] / 2**20:.1f} MiB of a {budget / 2**20:.1f} MiB budget")


if __name__ == "__main__":
    main()
