"""Encode and decode speed at common frame sizes (the README's "expected speed" table).

    python benchmarks/speed_sizes.py [--clip CLIP] [--frames 33] [--sizes 960x540 1280x720] \\
        [--quality medium] [--precision auto] [--out benchmarks/results/speed/speed_sizes-<flags>.json]

The first ``--frames`` frames of a real clip are scaled to each size (PyAV), encoded with
``lfqcodec.encode_frames`` to a context-coded ``.lfq`` and decoded with ``lfqcodec.decode_file`` to
lossless FFV1 (the CLI's code path after demuxing), each timed once after a warm-up run on 5 frames.
Recorded: frames per second, the precision the network ran in (int8 needs AVX512-VNNI or AVX-VNNI;
elsewhere fp32), the CPU's model and its AVX flags, torch threads, load average, date and command.
Run it on a quiet machine: nothing else (training, tests) beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import lfqcodec  # noqa: E402
from lfqcodec.model.inference import cpu_flags  # noqa: E402


def scaled_frames(clip: Path, frames: int, width: int, height: int) -> list[np.ndarray]:
    with av.open(str(clip)) as container:
        return [f.reformat(width=width, height=height, format="rgb24").to_ndarray()
                for f, _ in zip(container.decode(video=0), range(frames))]  # fmt: skip


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def measure(frames: list[np.ndarray], quality: str, tmp: Path, precision: str = "auto") -> dict:
    height, width = frames[0].shape[:2]
    lfq, back = tmp / "x.lfq", tmp / "x.mkv"
    lfqcodec.encode_frames(iter(frames[:5]), lfq, width=width, height=height, fps=Fraction(25), quality=quality,
                           device="cpu", overwrite=True, precision=precision)  # fmt: skip  (warm-up: model load, first-use set-up)
    started = time.perf_counter()
    report = lfqcodec.encode_frames(iter(frames), lfq, width=width, height=height, fps=Fraction(25), quality=quality,
                                    device="cpu", overwrite=True, precision=precision)  # fmt: skip
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    decoded = lfqcodec.decode_file(lfq, back, device="cpu", overwrite=True, precision=precision)
    decode_s = time.perf_counter() - started
    return {"size": f"{width}x{height}", "frames": len(frames), "quality": quality, "mode": report.mode,
            "decode_mode": decoded.mode,
            "encode_fps": len(frames) / encode_s, "decode_fps": len(frames) / decode_s,
            "bpp": report.bits_per_pixel}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=HERE.parent.parent / "shared/data/video/cockatoo.mp4")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--sizes", nargs="+", default=["960x540", "1280x720"])
    parser.add_argument("--quality", nargs="+", default=["medium"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")))
    kind = "vnni" if any("vnni" in f for f in flags) else "avx2"
    out = args.out or HERE / "results" / "speed" / f"speed_sizes-{kind}{'' if args.precision == 'auto' else '-' + args.precision}.json"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            frames = scaled_frames(args.clip, args.frames, width, height)
            for quality in args.quality:
                rows.append(measure(frames, quality, Path(tmp), args.precision))
                r = rows[-1]
                print(f"{r['size']:>10s} {quality:7s} encode {r['encode_fps']:.2f} fps, decode {r['decode_fps']:.2f} fps "
                      f"({r['mode']})", flush=True)  # fmt: skip
    record = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], HERE.parent), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": flags, "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "load_average": os.getloadavg()},  # fmt: skip
        "clip": args.clip.name,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
