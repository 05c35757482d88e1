"""Peak memory and time of range-decoding large latent frames, coder 1 and coder 2 (docs/FORMAT.md, "Memory").

    python benchmarks/entropy_memory.py [--side 1024] [--latent 2] [--out benchmarks/results/entropy-memory-2026-11-30.json]

Random bits (a 50 % chance each, the worst case for the coders' work) of ``--latent`` latent frames of
a ``--side`` x ``--side`` token grid (1024: an 8192x8192 video), 32 bits per token, are range-coded
with the shipped entropy model, with the tables alone (coder 1) and with the network (coder 2).
Each payload is coded and then decoded in fresh processes (Linux carries a process's peak across
fork and exec, so the parent stays small); the decoder's peak resident memory (``ru_maxrss``, the
interpreter and libraries included) and time per latent frame are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from lfqcodec.entropy.store import load_entropy_model

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

ENCODE = """
import sys, time
import numpy as np
from pathlib import Path
from lfqcodec.entropy.coder import encode_bits
from lfqcodec.entropy.store import load_entropy_model
model = load_entropy_model(sys.argv[1])
model = model if sys.argv[2] == "2" else model.base()
shape = tuple(int(v) for v in sys.argv[4].split(","))
bits = np.random.default_rng(0).random(shape) < 0.5
started = time.perf_counter()
Path(sys.argv[3]).write_bytes(encode_bits(bits, model))
print(time.perf_counter() - started)
"""

DECODE = """
import resource, sys, time
from pathlib import Path
from lfqcodec.entropy.coder import decode_bits
from lfqcodec.entropy.store import load_entropy_model
model = load_entropy_model(sys.argv[1])
model = model if sys.argv[2] == "2" else model.base()
payload = Path(sys.argv[3]).read_bytes()
shape = tuple(int(v) for v in sys.argv[4].split(","))
started = time.perf_counter()
frames = sum(1 for _ in decode_bits(payload, shape, model))
print(frames, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _run(code: str, argv: list[str]) -> list[str]:
    """``code`` in a fresh interpreter; its printed words."""
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True).stdout.split()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=1024, help="token grid side (1024: 8192x8192 pixels)")
    parser.add_argument("--latent", type=int, default=2, help="latent frames")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    path = MODELS_DIR / "lfq-base.entropy"
    entropy = load_entropy_model(path)
    if entropy.net is None:
        sys.exit(f"{path} has no network (run lfqcodec train-entropy)")
    shape = (32, args.latent, args.side, args.side)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for coder in (1, 2):
            payload = Path(folder) / f"coder{coder}.bin"
            argv = [str(path), str(coder), str(payload), ",".join(map(str, shape))]
            (encode_s,) = _run(ENCODE, argv)
            frames, decode_s, peak_kib = _run(DECODE, argv)  # ru_maxrss: KiB on Linux
            row = {"coder": coder, "payload_bytes": payload.stat().st_size, "encode_s": round(float(encode_s), 1),
                   "decode_s_per_latent_frame": round(float(decode_s) / int(frames), 2),
                   "decode_peak_rss_mib": round(int(peak_kib) / 1024)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    record = {"command": "python " + " ".join(sys.argv), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
              "entropy_model": entropy.model_id.hex(), "bits_shape": list(shape), "rows": rows}  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
