"""Does the encoder-side bit search still pay under the context coder? One chunk, three coders.

    python benchmarks/probes/search_rate_probe.py CLIP [--frames 33] [--crop 256] [--steps 20] [--quality medium]
        [--rate-weights 0 2]

Encodes the clip's first chunk (central ``--crop``) with the network, searches its kept bits as
``--preset veryslow`` does (``--steps`` steps, no decoder update) once per rate weight (0: no rate
term; else the search's rate term with the shipped context model, ``lfqcodec.codec.search``), and prints
the PSNR gain of the searched bits and their bytes against the network's under each coding a file
can use: 1.1's zstd bit planes, coder 1 (the tables) and coder 2 (tables and network), with the
preset's rule (``pays``: a gain must beat 6.02 dB per doubling of the bytes). One JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the maintained benchmarks
from preset_bench import load_clip  # this folder

from lfqcodec.codec.chunks import Codec
from lfqcodec.model.device import select_device
from lfqcodec.format.bitpack import compressed_size
from lfqcodec.model.checkpoint import MODELS_DIR, load_model
from lfqcodec.entropy.coder import encode_bits
from lfqcodec.entropy.store import find_for_tokenizer
from lfqcodec.presets.preset import DB_PER_DOUBLING, PRESETS, RunEncoder, psnr_of
from lfqcodec.codec.search import SearchConfig, search_bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clip", type=Path)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--rate-weights", type=float, nargs="+", default=[0.0])
    args = parser.parse_args()
    loaded = load_model()
    codec = Codec(loaded, select_device("cpu"))
    entropy = find_for_tokenizer(loaded.model_id, MODELS_DIR)
    keep, s = loaded.config.quality_bits[args.quality], loaded.config.spatial_factor
    frames = load_clip(args.clip, args.frames, args.crop)
    grid = (-(-frames[0].shape[0] // s), -(-frames[0].shape[1] // s))
    runner = RunEncoder(codec, grid, keep, PRESETS["veryslow"], 19, entropy)
    chunk = runner.prepare(frames)
    base = (chunk.latents > 0)[0].cpu().numpy()
    coders = {"zstd_1_1": lambda b: compressed_size(b, 19), "coder_1": lambda b: len(encode_bits(b, entropy.base())),
              "coder_2": lambda b: len(encode_bits(b, entropy))}  # fmt: skip
    args_text = [str(args.clip)] + [f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                    for k, v in vars(args).items() if k != "clip"]  # fmt: skip
    result = {"command": "python benchmarks/probes/search_rate_probe.py " + " ".join(args_text),
              "entropy_model": entropy.model_id.hex(), "runs": []}  # fmt: skip
    base_psnr = psnr_of(runner._mse(chunk, base))
    for weight in args.rate_weights:
        started = time.perf_counter()
        cfg = SearchConfig(steps=args.steps, rate_weight=weight, rate_model=entropy)
        found = search_bits(codec.tokenizer, chunk.video, chunk.latents, keep, cfg)[0].cpu().numpy()
        run = {"rate_weight": weight, "seconds": round(time.perf_counter() - started, 1),
               "flipped_fraction": float((found[:keep] != base[:keep]).mean()),
               "psnr_gain_db": round(psnr_of(runner._mse(chunk, found)) - base_psnr, 3), "bytes": {}}  # fmt: skip
        for name, size in coders.items():
            before, after = size(np.ascontiguousarray(base[:keep])), size(np.ascontiguousarray(found[:keep]))
            price = DB_PER_DOUBLING * math.log2(after / before)
            run["bytes"][name] = {"network": before, "searched": after, "ratio": round(after / before, 4),
                                  "price_db": round(price, 3), "pays": run["psnr_gain_db"] > price}  # fmt: skip
        print(json.dumps(run), file=sys.stderr, flush=True)
        result["runs"].append(run)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
