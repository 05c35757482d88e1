"""One fitted decoder update under several quantisers: its bytes and the PSNR it buys (encoder-side
choices only: the payload format is the same for all of them).

    python benchmarks/probes/update_quant_probe.py ~/.cache/lfqcodec/data/video/aquarium.mp4 \\
        --changes /tmp/aquarium-update.pt --out benchmarks/results/update/update_quant_probe-aquarium-256.json

Fits the ``veryslow`` update (float changes, before quantising) on the central 256x256 crop of the
clip's first 65 frames (two chunks of 33 and 32, the encoder's bits at ``--quality medium``), saved to
``--changes`` (loaded from there when it exists: the fit is most of the time), then quantises it with
each (bits per value, dead zone, step scale) and measures the payload bytes and the PSNR over the two
chunks with the update applied. ``net_db`` is the gain less the 6.02 dB-per-doubling price of its bytes
on top of the tokens' (``lfqcodec.presets.preset.pays``). The shipped quantiser is (4, 0, 1).
"""

from __future__ import annotations

import argparse
import sys
import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: the maintained benchmarks
from preset_bench import load_clip

from lfqcodec.codec.adapt import DecoderUpdate, UpdateSpec, applied
from lfqcodec.presets.adapt_fit import ChunkTarget, fit_changes
from lfqcodec.codec.chunks import Codec
from lfqcodec.model.device import select_device
from lfqcodec.model.checkpoint import MODELS_DIR, load_model
from lfqcodec.entropy.store import find_for_tokenizer
from lfqcodec.presets.preset import DB_PER_DOUBLING, PRESETS, RunEncoder, psnr_of

QUANTISERS = [(4, 0, 1), (3, 0, 1), (5, 0, 1), (6, 0, 1), (2, 0, 1), (4, 0.2, 1), (4, 0.35, 1), (3, 0.2, 1),
              (4, 0, 0.5), (5, 0, 0.5), (3, 0, 0.5), (5, 0.2, 0.5)]  # fmt: skip


def quantise(changes: list[torch.Tensor], spec: UpdateSpec, dead: float, scale: float) -> DecoderUpdate:
    """Per tensor, step = ``scale`` x peak / (2^(bits-1) - 1); values rounded with a dead zone
    (``|x| + 0.5 - dead`` floored), clamped to the quantiser's range."""
    limit = 2 ** (spec.bits - 1) - 1
    steps, values = [], []
    for change in changes:
        peak = float(change.abs().max())
        step = float(np.float16(scale * peak / limit)) if peak > 0 else 0.0
        q = torch.sign(change) * torch.floor(change.abs() / step + 0.5 - dead) if step else torch.zeros_like(change)
        steps.append(step)
        values.append(q.clamp(-limit, limit).to(torch.int8).numpy())
    return DecoderUpdate(spec, tuple(steps), tuple(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--changes", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    loaded = load_model(None)
    codec = Codec(loaded, select_device("cpu"))
    frames = load_clip(args.clip, 65, 256)
    grid = (frames[0].shape[0] // 8, frames[0].shape[1] // 8)
    preset = PRESETS["veryslow"]
    runner = RunEncoder(codec, grid, loaded.config.quality_bits["medium"], preset, 19,
                        find_for_tokenizer(loaded.model_id, MODELS_DIR))  # fmt: skip
    chunks = [runner.prepare(list(frames[:33])), runner.prepare(list(frames[33:]))]
    base = [(c.latents > 0)[0].numpy() for c in chunks]
    if args.changes.exists():
        changes = torch.load(args.changes)
    else:
        targets = [ChunkTarget(runner._codes(b), c.video) for c, b in zip(chunks, base)]
        changes = fit_changes(runner.decoder, targets, preset.spec, preset.fit)
        torch.save(changes, args.changes)
    tokens = sum(runner._bytes(b) for b in base)

    def psnr() -> float:
        return psnr_of(float(np.mean([runner._mse(c, b) for c, b in zip(chunks, base)])))

    before = psnr()
    rows = []
    for bits, dead, scale in QUANTISERS:
        data = quantise(changes, UpdateSpec(bits=bits), dead, scale).to_bytes()
        with applied(runner.decoder, DecoderUpdate.from_bytes(data, runner.decoder)):
            gain = psnr() - before
        ratio = (tokens + len(data)) / tokens
        net = gain - DB_PER_DOUBLING * math.log2(ratio)
        rows.append({"bits": bits, "dead_zone": dead, "step_scale": scale, "bytes": len(data),
                     "gain_db": round(gain, 3), "bytes_ratio": round(ratio, 3), "net_db": round(net, 3)})  # fmt: skip
        print(rows[-1], flush=True)
    record = {"command": f"python benchmarks/probes/update_quant_probe.py {args.clip} --changes {args.changes}",
              "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
              "date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "token_bytes": tokens,
              "psnr_without_update": round(before, 3), "rows": rows}  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
