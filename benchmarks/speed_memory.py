"""lfqcodec's decode speed at 720p and 1080p, and peak memory against clip length.

    python benchmarks/speed_memory.py [--frames 9] [--lengths 17 65 257] [--out benchmarks/results/speed_memory.json]

Each measurement runs in a fresh child process so that its peak resident memory (``ru_maxrss``)
is its own. Input is a synthetic moving pattern (speed and memory do not depend on content): it is
encoded once per size, then decoded to lossless FFV1 while timing. The memory part encodes and
decodes 256x256 clips of increasing length: streamed coding must keep the peak flat.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def pattern(index: int, height: int, width: int) -> np.ndarray:
    y, x = np.ogrid[0:height, 0:width]
    frame = np.stack([np.sin((x + 3 * index) / (9 + 4 * c)) * np.cos((y - index) / (11 + 3 * c)) for c in range(3)], -1)
    return ((frame + 1) * 127.5).astype(np.uint8)


def child(task: str, width: int, height: int, frames: int, workdir: Path) -> dict:
    import torch

    import lfqcodec

    torch.set_num_threads(os.cpu_count() or 1)
    lfq = workdir / f"{width}x{height}x{frames}.lfq"
    if task == "encode":
        started = time.perf_counter()
        lfqcodec.encode_frames((pattern(i, height, width) for i in range(frames)), lfq, width=width, height=height,
                               fps=Fraction(25), device="cpu", overwrite=True)  # fmt: skip
        seconds = time.perf_counter() - started
    else:
        started = time.perf_counter()
        lfqcodec.decode_file(lfq, workdir / "out.mkv", device="cpu", overwrite=True)
        seconds = time.perf_counter() - started
    return {"task": task, "width": width, "height": height, "frames": frames, "seconds": seconds,
            "fps": frames / seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def measure(task: str, width: int, height: int, frames: int, workdir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", task, str(width), str(height), str(frames), str(workdir)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{task:6s} {width}x{height} x{frames}: {result['fps']:.2f} fps, peak RSS {result['peak_rss_mib']:.0f} MiB",
          file=sys.stderr)  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=9, help="frames per speed measurement")
    parser.add_argument("--lengths", type=int, nargs="+", default=[17, 65, 257], help="clip lengths for the memory test")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed_memory.json")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task, width, height, frames, workdir = args.child
        print(json.dumps(child(task, int(width), int(height), int(frames), Path(workdir))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in ((1280, 720), (1920, 1080)):
            rows.append(measure("encode", width, height, args.frames, Path(tmp)))
            rows.append(measure("decode", width, height, args.frames, Path(tmp)))
        for frames in args.lengths:
            rows.append(measure("encode", 256, 256, frames, Path(tmp)))
            rows.append(measure("decode", 256, 256, frames, Path(tmp)))
    import torch

    record = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], HERE.parent), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU only",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
