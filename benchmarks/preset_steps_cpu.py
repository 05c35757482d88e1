"""CPU cost of the slow presets' parts, per step, on one 33-frame chunk (a central crop of a real clip):
the encoder network (what ``medium`` does), one update fitting step, one bit search step (one tile),
one decode, and applying an update; from these, the encode speed each preset would have on such a
clip (``fit steps x fit + search steps x tiles x search + network + RD-check decodes``).

    python benchmarks/preset_steps_cpu.py ../shared/data/validation/armwrestling.mp4 --crop 256 --out benchmarks/results/update/preset_steps_cpu.json

Run on a quiet machine for absolute numbers; on a shared one, the ratios between the parts hold better
than the seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from pathlib import Path

import torch

from lfqcodec.codec.adapt import UpdateState
from lfqcodec.presets.adapt_fit import ChunkTarget, FitConfig, fit_changes
from lfqcodec.codec.chunks import Codec
from lfqcodec.model.device import select_device
from lfqcodec.model.checkpoint import load_model
from lfqcodec.presets.preset import PRESETS, Preset, RunEncoder
from lfqcodec.codec.search import SearchConfig, search_bits



def timed(fn, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from preset_bench import load_clip

    loaded = load_model(None)
    codec = Codec(loaded, select_device("cpu"))
    frames = load_clip(args.clip, args.frames, args.crop)
    s = loaded.config.spatial_factor
    grid = (-(-frames[0].shape[0] // s), -(-frames[0].shape[1] // s))
    keep = loaded.config.quality_bits["medium"]
    runner = RunEncoder(codec, grid, keep, Preset("probe"), 19)
    chunk = runner.prepare(frames)
    bits = (chunk.latents > 0)[0].numpy()
    target = ChunkTarget(runner._codes(bits), chunk.video)
    spec = PRESETS["veryslow"].spec
    seconds = {
        "network_encode": timed(lambda: runner.prepare(frames)),
        "decode": timed(lambda: runner._mse(chunk, bits)),
        "fit_step": timed(lambda: fit_changes(runner.decoder, [target], spec, FitConfig(steps=1))),
        "search_step_per_tile": timed(lambda: search_bits(codec.tokenizer, chunk.video, chunk.latents, keep,
                                                          SearchConfig(steps=1))),  # fmt: skip
    }
    from lfqcodec.codec.adapt import quantize, slots

    payload = quantize(spec, [torch.zeros(t.shape) + 0.01 for t in slots(runner.decoder, spec)]).to_bytes()
    state = UpdateState(runner.decoder)
    seconds["apply_update"] = timed(lambda: (state.use(object(), payload), state.close()))
    tiles = 1  # a crop of at most 256 pixels is one search tile
    estimate = {}
    for name, preset in PRESETS.items():
        fit = preset.fit.steps if preset.fit else 0
        checks = (2 if preset.fit else 0) + (2 if preset.search_steps else 0)  # RD-check decodes per chunk
        total = (seconds["network_encode"] + fit * seconds["fit_step"]
                 + preset.search_steps * tiles * seconds["search_step_per_tile"] + checks * seconds["decode"])  # fmt: skip
        estimate[name] = {"seconds_per_chunk": round(total, 1), "fps": round(len(frames) / total, 3)}
    record = {
        "command": f"python benchmarks/preset_steps_cpu.py {args.clip} --crop {args.crop} --frames {args.frames}",
        "machine": f"{platform.node()} {platform.machine()} {torch.get_num_threads()} threads",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"), "torch": torch.__version__,
        "frames": len(frames), "size": list(frames[0].shape[:2]), "seconds": seconds, "estimate": estimate,
        "note": "fast = medium's network with window 4 (not estimated separately)",
    }  # fmt: skip
    print(json.dumps(record, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
