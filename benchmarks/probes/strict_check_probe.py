"""What the strict reader's check of range-coded payloads costs (issue 37): each decoded symbol is
coded again and the payload must be exactly that stream. Times every chunk's bits of one file with
the check and without it (the same decoder, the re-encoder left out), best of ``--rounds``.

    python benchmarks/probes/strict_check_probe.py VIDEO --frames 33 --out benchmarks/results/strict-check-cost.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import constriction
import numpy as np

import lfqcodec.entropy.coder as coder
import lfqcodec.format.container as container
from lfqcodec.api import encode_file
from lfqcodec.codec.decoding import open_reader


def unchecked(payload: bytes, shape: tuple[int, int, int, int], model):
    """``decode_bits`` without the re-encoder: what the reader did before the check."""
    b, latent, h, w = shape
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    state, family = coder._State(model, (b, h, w)), coder._family()

    def decoded(pairs: np.ndarray) -> np.ndarray:
        return np.asarray(decoder.decode(family, pairs), dtype=np.int32)

    if state.net is not None and latent:
        state.choice[:] = int(decoded(coder._HALF)[0]) * coder.GAINS.size
    for _ in range(latent):
        for k in range(b):
            for phase in (0, 1):
                state.cur[phase][k] = decoded(state.pairs_for(k, phase)).astype(np.uint8)
        yield state.end_frame()


def read_all_bits(path: Path) -> float:
    reader, handle = open_reader(path, entropy=True)
    with handle:
        started = time.perf_counter()
        for position in range(len(reader.chunks)):
            for _ in reader.iter_chunk(position):
                pass
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.lfq"
        report = encode_file(args.video, path, quality=args.quality, max_frames=args.frames, progress=False)
        checked = min(read_all_bits(path) for _ in range(args.rounds))
        container.decode_bits = unchecked
        plain = min(read_all_bits(path) for _ in range(args.rounds))
    h = report.header
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    result = {
        "command": "python benchmarks/probes/strict_check_probe.py " + " ".join(os.sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cores": os.cpu_count(),
                    "cpu_flags": [f for f in flags if f.startswith(("avx", "amx"))]},  # fmt: skip
        "clip": args.video.name, "size": f"{h.width}x{h.height}", "frames": h.frame_count, "quality": args.quality,
        "file_bytes": report.file_bytes,
        "bits_seconds_checked": round(checked, 4), "bits_seconds_unchecked": round(plain, 4),
        "check_ms_per_frame": round((checked - plain) / h.frame_count * 1000, 2),
    }  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
