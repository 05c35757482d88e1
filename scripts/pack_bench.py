#!/usr/bin/env python3
"""Pack what the preset benchmark needs on the GPU machine into .gpu-bench/ (docs/GPU_RUN.md, step 4).

    python scripts/pack_bench.py [--data ~/.cache/lfqcodec/data] [--frames 65] [--out .gpu-bench]

- ``clips/``: the four held-out clips (armwrestling, kitten, aquarium, city), each cut to its first
  ``--frames`` + 8 frames by copying packets (nothing re-encoded) and checked to decode to the same
  first ``--frames`` frames as its source;
- ``wheels/``: the packages the encoder needs that the GPU image lacks (zstandard, constriction), at
  this checkout's versions, built for that image's Python 3.12 (``pip download``: needs the registry).

The pack stays under 10 MiB, so it travels with the checkout (about 49 MiB) in one device call.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import av
import numpy as np

from lfqcodec.training.heldout import measuring_clips

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("zstandard", "constriction")  # imported by the encoder; absent from the GPU image
SPARE_FRAMES = 8  # packets past the last frame measured (decoders may hold frames back)
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def _frames(path: Path, count: int) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(count))])


def cut_clip(src: Path, dst: Path, frames: int) -> int:
    """Copy the packets of ``src``'s first video stream into ``dst`` until it holds ``frames`` +
    ``SPARE_FRAMES`` frames; returns how many packets were copied. Refuses a cut that does not
    decode to the source's first ``frames`` frames."""
    copied = 0
    with av.open(str(src)) as source, av.open(str(dst), mode="w") as out:
        stream = source.streams.video[0]
        target = out.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.dts is None:
                continue
            packet.stream = target
            out.mux(packet)
            copied += 1
            if copied >= frames + SPARE_FRAMES:
                break
    want, got = _frames(src, frames), _frames(dst, frames)
    if want.shape != got.shape or not np.array_equal(want, got):
        raise SystemExit(f"{dst.name}: the cut does not decode to {src.name}'s first {frames} frames")
    return copied


def fetch_wheels(out: Path) -> list[Path]:
    """Wheels of ``PACKAGES`` at the installed versions, for CPython 3.12 on x86-64 Linux."""
    pins = [f"{name}=={version(name)}" for name in PACKAGES]
    platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(out), *pins],
                   check=True)  # fmt: skip
    return sorted(out.glob("*.whl"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache/lfqcodec/data")
    parser.add_argument("--frames", type=int, default=65)
    parser.add_argument("--out", type=Path, default=REPO / ".gpu-bench")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    (args.out / "clips").mkdir(parents=True)
    manifest = {"frames": args.frames, "clips": [], "wheels": []}
    for src in measuring_clips(data_cache=args.data):
        dst = args.out / "clips" / src.name
        packets = cut_clip(src, dst, args.frames)
        digest = hashlib.sha256(dst.read_bytes()).hexdigest()
        entry = {"file": f"clips/{dst.name}", "source": src.name, "packets": packets, "sha256": digest}
        manifest["clips"].append(entry)
        print(f"{dst.name}: {packets} packets, {dst.stat().st_size / 1024:.0f} KiB")
    for wheel in fetch_wheels(args.out / "wheels"):
        manifest["wheels"].append(wheel.name)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {len(manifest['clips'])} clips, {len(manifest['wheels'])} wheels, {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
