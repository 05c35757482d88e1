"""What a decoder update costs the decoder: the same tokens decoded from a file without and with an
update record (one per run of ``--run`` chunks, payload of the shipped update design with small
pseudo-random values: the work of applying it does not depend on the values), timed alternately.

    python benchmarks/update_decode_cost.py CLIP --frames 65 --out benchmarks/results/update/decode_cost.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import lfqcodec
from lfqcodec.codec.adapt import quantize, slots
from lfqcodec.model.checkpoint import MODELS_DIR, load_model
from lfqcodec.format.container import LfqReader, LfqWriter
from lfqcodec.entropy.store import find_for_tokenizer
from lfqcodec.presets.preset import UPDATE_SPEC


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--frames", type=int, default=65)
    parser.add_argument("--run", type=int, default=2, help="chunks per update")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    loaded = load_model(None)
    generator = torch.Generator().manual_seed(0)
    changes = [torch.randn(s.shape, generator=generator) * 0.01 for s in slots(loaded.tokenizer.decoder, UPDATE_SPEC)]
    payload = quantize(UPDATE_SPEC, changes).to_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        plain, updated = Path(tmp) / "plain.lfq", Path(tmp) / "updated.lfq"
        lfqcodec.encode_file(args.clip, plain, max_frames=args.frames, device="cpu")
        with open(plain, "rb") as handle, open(updated, "wb") as out:
            entropy_model = find_for_tokenizer(loaded.model_id, MODELS_DIR)
            reader = LfqReader(handle, entropy_model=entropy_model)
            writer = LfqWriter(out, reader.header, 19, (2, 0), entropy_model)
            for i, chunk in enumerate(reader.chunks):
                if i % args.run == 0:
                    writer.write_update(payload, i, min(args.run, len(reader.chunks) - i))
                writer.write_chunk(reader.read_chunk(i), chunk.frame_count)
            writer.close()
        seconds: dict[str, list[float]] = {"without": [], "with": []}
        frames = {}
        for _ in range(args.rounds):
            for name, path in (("without", plain), ("with", updated)):
                started = time.perf_counter()
                frames[name] = np.stack(list(lfqcodec.api.decode_frames(path, model=loaded, device="cpu")))
                seconds[name].append(time.perf_counter() - started)
        sizes = {"without": plain.stat().st_size, "with": updated.stat().st_size}
    record = {
        "command": f"python benchmarks/update_decode_cost.py {args.clip} --frames {args.frames} --run {args.run} "
                   f"--rounds {args.rounds}",
        "machine": f"{platform.node()} {platform.machine()} {torch.get_num_threads()} threads",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "payload_bytes": len(payload), "file_bytes": sizes, "seconds": seconds,
        "ratio_best": min(seconds["with"]) / min(seconds["without"]),
        "frames_differ": bool(not np.array_equal(frames["with"], frames["without"])),
    }  # fmt: skip
    print(json.dumps(record, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
