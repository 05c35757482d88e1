"""Peak resident memory of lfqcodec on hostile-but-valid files (a small file that claims a huge chunk).

    python benchmarks/hostile_memory.py [--cases tokens,decode-8k,decode-uhd] [--timeout 60]
        [--out benchmarks/results/hostile-memory.json]

Cases (each a 1.1 file of zero bits made for the shipped model, then the CLI in a child process, its peak
RSS read from the kernel, killed at --timeout):
  tokens      one 8192x8192, 1021-frame, 32-bit chunk (33 KB on disk, 1 GiB of packed bits): `lfqcodec tokens`
  decode-8k   the same file: `lfqcodec decode` (refused by the default --max-pixels)
  decode-uhd  one 3840x2160, 9-frame, 16-bit chunk: `lfqcodec decode` (the network at 4K)
  decode-1080p  one 1920x1080, 9-frame, 16-bit chunk: `lfqcodec decode`
  decode-1080p-whole  the same with `--max-memory 0` (whole frames, no tiling: the speed it costs)
  decode-8k-network  one 8192x8192, 5-frame, 16-bit chunk: `lfqcodec decode --max-pixels 0` to .y4m (slow: tens of
              minutes; at 8K the FFV1 and H.264 writers alone would take ~6 GiB, so --max-memory refuses those outputs)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import zstandard

from lfqcodec.model.checkpoint import load_model
from lfqcodec.format.container import StreamHeader
from lfqcodec.format.header import encode_header
from lfqcodec.format.records import ChunkEntry, chunk_header_v1, index_bytes, trailer_bytes

HERE = Path(__file__).resolve().parent


def zero_chunk_file(path: Path, width: int, height: int, frames: int, bits: int, quality: str) -> None:
    model = load_model()
    header = StreamHeader(model_id=model.model_id, width=width, height=height, frame_count=frames, fps=Fraction(25),
                          time_base=Fraction(1, 25), bits=bits, model_bits=model.config.num_bits, temporal_factor=4,
                          spatial_factor=8, gop=frames, grid_height=height // 8, grid_width=width // 8, chunk_count=1,
                          version=(1, 1), coder=0, metadata={"quality": quality})  # fmt: skip
    raw = (header.chunk_bits(frames) + 7) // 8
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True).compressobj(size=raw)
    block = bytes(1 << 24)
    parts = [compressor.compress(block) for _ in range(raw // len(block))]
    payload = b"".join([*parts, compressor.compress(bytes(raw % len(block))), compressor.flush()])
    head = encode_header(header)
    entry = ChunkEntry(0, len(head), 0, 0, frames)
    chunk = chunk_header_v1(entry, header.latent_frames(frames), raw, payload) + payload
    entry = replace(entry, size=len(chunk))
    path.write_bytes(head + chunk + index_bytes(1, [entry], []) + trailer_bytes(len(head) + len(chunk)))


def peak_rss(args: list[str], timeout: float) -> dict:
    """Run ``lfqcodec ARGS`` in a child; its peak RSS (MiB), seconds, exit status (None if it ran out of time)."""
    started = time.time()
    child = subprocess.Popen([sys.executable, "-m", "lfqcodec.cli", *args], stderr=subprocess.PIPE)
    try:
        _, err = child.communicate(timeout=timeout)
        status = child.returncode
    except subprocess.TimeoutExpired:
        child.terminate()
        _, err = child.communicate()
        status = None
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux; children so far
    return {"command": "lfqcodec " + " ".join(args[:1]), "exit_status": status, "seconds": round(time.time() - started, 1),
            "peak_rss_mib_children_so_far": round(peak), "stderr": err.decode(errors="replace").strip()[-200:]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="tokens,decode-8k")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "hostile-memory.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = tmp / "big.lfq"
        sizes = {"decode-uhd": (3840, 2160, 9), "decode-1080p": (1920, 1080, 9), "decode-1080p-whole": (1920, 1080, 9),
                 "decode-8k-network": (8192, 8192, 5)}
        for case in args.cases.split(","):
            if case in ("tokens", "decode-8k") and not big.exists():
                zero_chunk_file(big, 8192, 8192, 1021, 32, "high")
            if case in sizes:
                small = tmp / f"{case}.lfq"
                zero_chunk_file(small, *sizes[case], 16, "medium")
                suffix = ".y4m" if case == "decode-8k-network" else ".mkv"
                cli = ["decode", str(small), str(tmp / f"{case}{suffix}"), "--max-pixels", "0", "-q"]
                if case == "decode-1080p-whole":
                    cli += ["--max-memory", "0"]
            else:
                cli = {"tokens": ["tokens", str(big), str(tmp / "t.npz"), "--max-pixels", "0"], "decode-8k": ["decode", str(big), str(tmp / "o.mkv")]}[case]
            rows.append({"case": case, **peak_rss(cli, args.timeout)})
            print(rows[-1], flush=True)
    record = {"date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()} cores",
              "command": f"python benchmarks/hostile_memory.py --cases {args.cases} --timeout {args.timeout:g}",
              "note": "peak RSS is the largest of the children run so far (RUSAGE_CHILDREN): run one case per call "
                      "for per-case numbers", "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
