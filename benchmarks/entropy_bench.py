"""The context model (2.0, coder 1) and its network (2.1, coder 2) against 1.1's zstd bit planes,
for the same tokens (issue 15).

For each held-out clip, the shipped tokenizer's bits of the first ``--frames`` frames (chunks of 33,
scene cuts on, as ``lfqcodec encode``) are written per quality as a 1.1 file (zstd level 19, the
writer of release 1873cc4), as a 2.0 file with the shipped entropy model's tables alone and, when
the model has its network, as a 2.1 file. Files are compared whole (headers and index included);
each is read back and must give the same tokens. Then the time of range coding plus decoding one
33-frame chunk at 720p at each quality is set against the network's decode time for that chunk
at the default precision (pause other CPU work for the timing).

    python benchmarks/entropy_bench.py --out benchmarks/results/entropy-2026-11-30-coder2.json
    python benchmarks/entropy_bench.py --no-timing --out benchmarks/results/entropy-2026-11-30-heldout4.json

(The first ran on an earlier set of clips with vtest in city's place; ``--clips`` chooses others.)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from lfqcodec.codec.chunks import Codec
from lfqcodec.model.device import select_device
from lfqcodec.model.checkpoint import MODELS_DIR, load_model
from lfqcodec.format.container import LfqReader, LfqWriter, StreamHeader
from lfqcodec.entropy.coder import decode_bits, encode_bits
from lfqcodec.entropy.store import find_for_tokenizer, load_entropy_model
from lfqcodec.training.heldout import measuring_clips
from lfqcodec.training.token_cache import clip_tokens

DATA = Path.home() / ".cache/lfqcodec/data/video"
TIMING_CLIP = DATA / "bigbuckbunny.mp4"  # 1280x720


def _file(tokens, bits: int, version, entropy, grid) -> bytes:
    header = StreamHeader(model_id=bytes(16), width=grid[1] * 8, height=grid[0] * 8, frame_count=0, fps=Fraction(25),
                          time_base=Fraction(1, 25), bits=bits, model_bits=32, temporal_factor=4, spatial_factor=8,
                          gop=33, grid_height=grid[0], grid_width=grid[1], metadata={"model_name": "lfq-base"})  # fmt: skip
    buf = io.BytesIO()
    writer = LfqWriter(buf, header, 19, version, entropy)
    for chunk, frames in zip(tokens.chunks, tokens.frames):
        writer.write_chunk(chunk[:bits], frames)
    writer.close()
    return buf.getvalue()


def sizes(model, entropy, clips, frames: int) -> dict:
    """Whole files: 1.1 (zstd), 2.0 (the tables alone, coder 1) and, when the model has its network,
    2.1 (coder 2), each read back to the same tokens. ``ratio`` is the newest format's against 1.1."""
    qualities = model.config.quality_bits
    rows, ratios = [], {q: [] for q in qualities}
    coders = {"2_0": entropy.base()} | ({"2_1": entropy} if entropy.net is not None else {})
    for clip in clips:
        tokens = clip_tokens(clip, model, max_frames=frames)
        grid = tokens.chunks[0].shape[2:]
        for quality, bits in qualities.items():
            old = _file(tokens, bits, (1, 1), None, grid)
            row = {"clip": clip.name, "quality": quality, "bits": bits, "chunks": len(tokens.chunks),
                   "frames": sum(tokens.frames), "bytes_1_1_zstd": len(old)}  # fmt: skip
            for name, coder in coders.items():
                new = _file(tokens, bits, (2, 0), coder, grid)
                reader = LfqReader(io.BytesIO(new), entropy_model=coder)
                assert all(np.array_equal(reader.read_chunk(i), c[:bits]) for i, c in enumerate(tokens.chunks))
                row |= {f"bytes_{name}": len(new), f"ratio_{name}": round(len(new) / len(old), 4),
                        f"context_chunks_{name}": sum(c.coder != 0 for c in reader.chunks)}  # fmt: skip
            row["ratio"] = row[f"ratio_{name}"]
            ratios[quality].append(row["ratio"])
            rows.append(row)
            print(f"{clip.name:18} {quality:6} 1.1 {len(old):8d}  " + "  ".join(
                f"{n.replace('_', '.')} {row[f'bytes_{n}']:8d} ({row[f'ratio_{n}']:.3f})" for n in coders), flush=True)  # fmt: skip
    means = {q: round(float(np.mean(r)), 4) for q, r in ratios.items()}
    print("mean ratio per quality:", means, flush=True)
    return {"per_clip": rows, "mean_ratio": means, "mean_reduction_percent": {q: round(100 * (1 - m), 1) for q, m in means.items()}}


def _network_decode_s(model, bits, frames) -> tuple[float, str]:
    codec = Codec(model, select_device("cpu"))
    started = time.perf_counter()
    with torch.no_grad():
        count = sum(len(block) for block in codec.decode_chunk(bits, frames, 720, 1280))
    assert count == frames
    return time.perf_counter() - started, codec.mode.precision


def timing(model, entropy, clip: Path, repeats: int) -> dict:
    """Coding plus decoding one 33-frame chunk at each quality, against the network's decode of that
    chunk with the default (automatic) precision. This VM's speed drifts by up to 1.5x over minutes,
    so the coders are timed ``repeats`` times, interleaved, and the network before and after them;
    each keeps its fastest run."""
    tokens = clip_tokens(clip, model, max_frames=33)
    bits, frames = tokens.chunks[0], tokens.frames[0]
    torch.set_num_threads(os.cpu_count() or 1)
    network, precision = _network_decode_s(model, bits, frames)
    coders = {"coder_1": entropy.base()} | ({"coder_2": entropy} if entropy.net is not None else {})
    best, sizes = {}, {}
    for _ in range(repeats):
        for name, coder in coders.items():
            for quality, b in model.config.quality_bits.items():
                key = f"{name}_{quality}"
                started = time.perf_counter()
                payload = encode_bits(bits[:b], coder)
                encoded = time.perf_counter() - started
                started = time.perf_counter()
                decoded = np.stack(list(decode_bits(payload, bits[:b].shape, coder)), axis=1)
                elapsed = (encoded, time.perf_counter() - started)
                assert np.array_equal(decoded, bits[:b])
                old = best.get(key, (1e9, 1e9))
                best[key] = (min(old[0], elapsed[0]), min(old[1], elapsed[1]))
                sizes[key] = (len(payload), bits[:b].size)
    network = min(network, _network_decode_s(model, bits, frames)[0])
    result = {"clip": clip.name, "shape": list(bits.shape), "frames": int(frames), "network_precision": precision,
              "network_decode_s": round(network, 2), "repeats": repeats, "coders": {}}  # fmt: skip
    for key, (encode_s, decode_s) in best.items():
        result["coders"][key] = {
            "payload_bytes": sizes[key][0], "encode_s": round(encode_s, 3), "decode_s": round(decode_s, 3),
            "coding_share_of_network_decode": round((encode_s + decode_s) / network, 4),
            "symbols_per_second_decode": round(sizes[key][1] / decode_s)}  # fmt: skip
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=65)
    parser.add_argument("--clips", type=Path, nargs="+", default=measuring_clips(), help="default: the four held-out clips")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timings of the coders (fastest kept)")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--entropy", type=Path, default=None, help="an .entropy file (default: the installed one)")
    args = parser.parse_args()
    model = load_model()
    entropy = load_entropy_model(args.entropy) if args.entropy else find_for_tokenizer(model.model_id, MODELS_DIR)
    if entropy is None:
        sys.exit(f"no entropy model for {model.name} in {MODELS_DIR}: run lfqcodec train-entropy")
    record = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_average_at_start": os.getloadavg()},  # fmt: skip
        "tokenizer": {"name": model.name, "id": model.model_id.hex()},
        "entropy_model": entropy.model_id.hex(),
        "sizes": sizes(model, entropy, args.clips, args.frames),
    }
    if not args.no_timing:
        record["timing_720p"] = timing(model, entropy, TIMING_CLIP, args.repeats)
    if args.out:
        args.out.write_text(json.dumps(record, indent=2, default=int) + "\n")


if __name__ == "__main__":
    main()
