"""Peak memory and time of ``info``, ``info --json`` and ``decode`` on valid files of very many
records (issue 37): N one-frame chunks of 8x8 pixels, and M empty skippable records before one chunk.
Each command runs in its own process (from a parent that never loads the model); its peak RSS comes
from ``wait4``. Writes a JSON with the
command, machine, CPU flags and date.

    python benchmarks/hostile_records.py --chunks 4000000 --skipped 2000000 \
        --out benchmarks/results/hostile-records.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, chunks: int, skipped: int) -> Path:
    """A valid 2.0 file: ``skipped`` empty records of type 0x8000, then ``chunks`` one-frame chunks."""
    from lfqcodec.entropy.coder import encode_bits
    from lfqcodec.entropy.store import load_entropy_model
    from lfqcodec.format.container import StreamHeader
    from lfqcodec.format.header import encode_header
    from lfqcodec.format.records import ChunkEntry, RecordEntry, index_bytes, record_header, trailer_bytes
    from lfqcodec.model.checkpoint import load_model

    loaded = load_model(ROOT / "models" / "lfq-base.safetensors")
    tables = load_entropy_model(ROOT / "models" / "lfq-base.entropy").base()  # coder 1
    h = StreamHeader(model_id=loaded.model_id, width=8, height=8, frame_count=chunks, fps=Fraction(25),
                     time_base=Fraction(1, 25), bits=16, model_bits=loaded.config.num_bits, temporal_factor=4,
                     spatial_factor=8, gop=1, grid_height=1, grid_width=1, chunk_count=chunks, version=(2, 0), coder=1,
                     entropy_id=tables.model_id, metadata={"model_name": "lfq-base"})  # fmt: skip
    payload = encode_bits(np.random.default_rng(0).random((16, 1, 1, 1)) > 0.5, tables)
    entries, others = [], []
    with open(path, "wb") as out:
        out.write(encode_header(h))
        at = out.tell()
        for i in range(skipped):
            record = record_header(0x8000, 0, i, 0, 0, 0, 0, 0, 0, b"")
            out.write(record)
            others.append(RecordEntry(i, 0x8000, at, len(record), 0, 0))
            at += len(record)
        for i in range(chunks):
            record = record_header(0, 1, skipped + i, i, 0, i, 1, 1, 0, payload) + payload
            out.write(record)
            entries.append(ChunkEntry(i, at, len(record), i, 1, skipped + i, -1, 1))
            at += len(record)
        out.write(index_bytes(2, entries, others) + trailer_bytes(at))
    return path


def measure(args: list[str], stdout) -> dict:
    started = time.time()
    process = subprocess.Popen([sys.executable, "-m", "lfqcodec.cli", *args], stdout=stdout, stderr=subprocess.PIPE)
    stderr = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    return {"command": "lfqcodec " + " ".join(Path(a).name if "/" in a else a for a in args),
            "exit": os.waitstatus_to_exitcode(status), "seconds": round(time.time() - started, 1),
            "peak_rss_mib": usage.ru_maxrss // 1024, "stderr_last_line": stderr.strip().splitlines()[-1:]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=4_000_000)
    parser.add_argument("--skipped", type=int, default=2_000_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "hostile-records.json")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        chunked, skips = Path(tmp) / "chunks.lfq", Path(tmp) / "skipped.lfq"
        # built in another process: a child's peak RSS on Linux counts what it inherited before exec
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            pool.starmap(build, [(chunked, args.chunks, 0), (skips, 1, args.skipped)])
        for path, name in ((chunked, f"{args.chunks} one-frame chunks"), (skips, f"{args.skipped} skipped records")):
            for command in (["info", str(path)], ["info", "--json", str(path)],
                            ["decode", "--frames", "8", "-q", "-y", str(path), str(Path(tmp) / "out.y4m")]):  # fmt: skip
                with open(os.devnull, "w") as sink:
                    run = measure(command, sink)
                run.update(file=name, file_bytes=path.stat().st_size)
                runs.append(run)
                print(json.dumps(run), flush=True)
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    result = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count(),
                    "cpu_flags": [f for f in flags if f.startswith(("avx", "amx"))]},  # fmt: skip
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
