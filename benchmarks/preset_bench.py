"""Presets against each other on real clips: bits per pixel (update included), PSNR, encode fps,
decode time with and without the decoder update.

    python benchmarks/preset_bench.py CLIP [CLIP ...] --frames 65 --presets medium slow veryslow \
        --out benchmarks/results/update/preset_bench.json

Each clip's first ``--frames`` frames (optionally a central ``--crop``) are coded in chunks of
``--gop`` frames (no scene cuts, the same chunks for every preset) by the preset's encoder
(:class:`lfqcodec.presets.preset.RunEncoder`), one update per run of whole chunks of at most the preset's
``run_frames`` frames (``--run-frames``); the token bits are written with the ``.lfq`` writer into
memory and the update payload's bytes plus ``RECORD_BYTES`` for its record are added: the size a
file would have. PSNR is over RGB, all frames, from the decoder's own output (update applied).

``--sweep`` first fits each update design in ``--candidates`` on the ``--sweep-clips`` (clips that
are not benchmark clips) and picks the one with the best rate-distortion net gain
(``gain - 6.02 log2(bytes ratio)``) for the slow presets; the sweep is recorded too.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import math
import platform
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from lfqcodec.codec.adapt import UpdateSpec, UpdateState
from lfqcodec.presets.adapt_fit import FitConfig
from lfqcodec.codec.chunks import Codec
from lfqcodec.model.device import select_device
from lfqcodec.model.checkpoint import MODELS_DIR, load_model
from lfqcodec.format.container import LfqWriter, StreamHeader
from lfqcodec.entropy.store import find_for_tokenizer
from lfqcodec.presets.preset import DB_PER_DOUBLING, PRESETS, Preset, RunEncoder, psnr_of

RECORD_BYTES = 48  # --format 1.1 (no update records): an update record's framing, estimated


def load_clip(path: Path, frames: int, crop: int | None) -> list[np.ndarray]:
    """First ``frames`` RGB frames (PyAV, else OpenCV where PyAV is absent), central crop."""
    try:
        import av

        opener = av.open  # a stand-in module without it where PyAV is missing
    except (ImportError, AttributeError):
        opener = None
    if opener is not None:
        with opener(str(path)) as container:
            video = [f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(frames))]
    else:
        import cv2

        capture, video = cv2.VideoCapture(str(path)), []
        while len(video) < frames:
            ok, frame = capture.read()
            if not ok:
                break
            video.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    out = np.stack(video)
    if crop:
        h, w = out.shape[1:3]
        ch, cw = min(crop, h) // 8 * 8, min(crop, w) // 8 * 8
        y, x = (h - ch) // 2, (w - cw) // 2
        out = out[:, y : y + ch, x : x + cw]
    return list(np.ascontiguousarray(out))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def code_clip(codec: Codec, loaded, frames: list[np.ndarray], preset: Preset, quality: str, gop: int,
              timing: bool = True, version: tuple[int, int] = (2, 0)) -> dict:
    cfg, device = loaded.config, codec.device
    keep, s = cfg.quality_bits[quality], cfg.spatial_factor
    height, width = frames[0].shape[:2]
    grid = (-(-height // s), -(-width // s))
    zstd = preset.zstd_level or 19
    codec.window = preset.window or 2
    sync(device)
    started = time.time()
    entropy_model = find_for_tokenizer(loaded.model_id, MODELS_DIR) if version[0] == 2 else None
    runner = RunEncoder(codec, grid, keep, preset, zstd, entropy_model)
    starts = list(range(0, len(frames), gop))
    runs, at = [], 0
    while at < len(starts):  # whole chunks, at most run_frames frames per run (as preset.write_runs)
        run = [starts[at]]
        at += 1
        while at < len(starts) and min(starts[at] + gop, len(frames)) - run[0] <= preset.run_frames:
            run.append(starts[at])
            at += 1
        runs.append(run)
    results, previous = [], None
    for run in runs:
        chunks = [runner.prepare(frames[a : a + gop]) for a in run]
        result = runner.encode(chunks, previous)
        results.append(result)
    sync(device)
    encode_s = time.time() - started
    header = StreamHeader(loaded.model_id, width, height, 0, Fraction(25), Fraction(1, 25), keep, cfg.num_bits,
                          cfg.temporal_factor, s, gop, grid[0], grid[1], metadata={"model_name": loaded.name,
                          "quality": quality, "preset": preset.name})  # fmt: skip
    buffer = io.BytesIO()
    writer = LfqWriter(buffer, header, zstd, version, entropy_model)
    for result in results:
        if result.payload is not None:
            writer.write_update(result.payload, len(writer.entries), len(result.chunks))
        for chunk in result.chunks:
            writer.write_chunk(chunk.bits[:keep], len(chunk.frames))
    writer.close()
    update_bytes = sum(len(r.payload) for r in results if r.payload)
    size = len(buffer.getvalue()) + (update_bytes + RECORD_BYTES * sum(1 for r in results if r.payload)
                                     if version[0] == 1 else 0)  # 1.x cannot hold them: estimated

    def decode(with_updates: bool) -> tuple[float, float]:
        state, total, count = UpdateState(codec.tokenizer.decoder), 0.0, 0
        sync(device)
        t0 = time.time()
        for number, result in enumerate(results):
            state.use(number if with_updates and result.payload else None, result.payload if with_updates else None)
            for chunk in result.chunks:
                at = 0
                for block in codec.decode_chunk(chunk.bits[:keep], len(chunk.frames), height, width):
                    source = np.stack(chunk.frames[at : at + len(block)]).astype(np.float32)
                    total += float(((block.astype(np.float32) - source) ** 2).sum())
                    count += source.size
                    at += len(block)
        sync(device)
        state.close()
        return total / count, time.time() - t0

    if timing:
        decode(False)  # warm-up (allocator, kernels), so neither timed pass pays for it
    mse, decode_s = decode(True)
    plain_decode_s = decode(False)[1] if timing else float("nan")
    return {
        "preset": preset.name, "frames": len(frames), "width": width, "height": height, "bytes": size,
        "update_bytes": update_bytes, "bpp": size * 8 / (width * height * len(frames)), "psnr": psnr_of(mse),
        "encode_s": encode_s, "encode_fps": len(frames) / encode_s, "decode_s": decode_s,
        "decode_s_without_update": plain_decode_s, "runs": [r.stats for r in results],
    }  # fmt: skip


def parse_candidate(text: str) -> tuple[str, UpdateSpec, FitConfig]:
    """``name:norms,biases,lora_rank,refiner,bits,steps,lr``."""
    name, values = text.split(":")
    n, b, r, ref, bits, steps, lr = values.split(",")
    return name, UpdateSpec(bool(int(n)), bool(int(b)), int(r), bool(int(ref)), int(bits)), FitConfig(int(steps), float(lr))


def sweep(codec, loaded, clips, args) -> tuple[list[dict], str | None]:
    rows, net = [], {}
    started = time.time()
    for text in args.candidates:
        if time.time() - started > args.sweep_budget:
            break
        name, spec, fit = parse_candidate(text)
        gains = []
        for clip in clips:
            preset = Preset(name, fit=fit, spec=spec)
            row = code_clip(codec, loaded, clip[1], preset, args.quality, args.gop, timing=False, version=args.format)
            stats = row["runs"]
            base = sum(r["base_bytes"] for r in stats)
            upd = sum(r.get("update_bytes", 0) for r in stats)
            gain = float(np.mean([r.get("update_gain_db", 0.0) for r in stats]))
            gains.append(gain - DB_PER_DOUBLING * math.log2((base + upd) / base))
            rows.append({"clip": clip[0], "candidate": text, "gain_db": gain, "base_bytes": base, "update_bytes": upd,
                         "net_db": gains[-1], "encode_s": row["encode_s"]})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        net[text] = float(np.mean(gains))
    best = max(net, key=net.get) if net else None
    return rows, best


def _arg_text(value) -> str:
    """An option's value as typed: lists space-separated, the format as ``2.0``."""
    if isinstance(value, list):
        return " ".join(map(str, value))
    return ".".join(map(str, value)) if isinstance(value, tuple) else str(value)


def summarise(rows: list[dict], presets: list[str]) -> dict:
    """Per preset, means over the clips that also have a row of ``presets[0]`` (the reference): PSNR
    gain, bits-per-pixel ratio, encode fps, and decode time with the update against without."""
    summary = {}
    reference = {r["clip"]: r for r in rows if r["preset"] == presets[0]}
    for name in presets:
        mine = [r for r in rows if r["preset"] == name and r["clip"] in reference]
        base = [reference[r["clip"]] for r in mine]
        if not mine:
            continue
        summary[name] = {
            "clips": [r["clip"] for r in mine],
            "mean_psnr_gain_db": float(np.mean([m["psnr"] - b["psnr"] for m, b in zip(mine, base)])),
            "mean_bpp_ratio": float(np.mean([m["bpp"] / b["bpp"] for m, b in zip(mine, base)])),
            "mean_encode_fps": float(np.mean([m["encode_fps"] for m in mine])),
            "mean_decode_ratio": float(np.mean([m["decode_s"] / m["decode_s_without_update"] for m in mine])),
        }
    return summary


def _git_commit() -> str:
    """The checkout's commit (``+dirty`` with local changes), or ``?`` outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path)
    parser.add_argument("--frames", type=int, default=65)
    parser.add_argument("--crop", type=int, default=None)
    parser.add_argument("--gop", type=int, default=33)
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default=None)
    parser.add_argument("--presets", nargs="+", default=["medium", "slow", "veryslow"])
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--sweep-clips", nargs="*", type=Path, default=[])
    parser.add_argument("--sweep-frames", type=int, default=33)
    parser.add_argument("--sweep-budget", type=float, default=1e9, help="seconds; later candidates are skipped")
    parser.add_argument("--candidates", nargs="*", default=[])
    parser.add_argument("--format", type=lambda v: tuple(int(x) for x in v.split(".")), default=(2, 0),
                        help="container version: 2.0 (context coder when the model has one, real update records) "
                             "or 1.1 (zstd; update records estimated, as in the first H200 run)")
    parser.add_argument("--run-frames", type=int, default=None, help="frames per update run [default: the preset's]")
    parser.add_argument("--deadline", type=float, default=1e9, help="seconds; later clip/preset pairs are skipped")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (faster fitting; not the CPU's bits)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    began = time.time()
    loaded = load_model(args.model)
    codec = Codec(loaded, select_device(args.device))
    if args.tf32 and codec.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    record = {
        "command": "python benchmarks/preset_bench.py " + " ".join(str(c) for c in args.clips) + " " +
                   " ".join(f"--{k.replace('_', '-')} {_arg_text(v)}"
                            for k, v in vars(args).items() if k != "clips" and v not in (None, False, [])),
        "machine": f"{platform.node()} {platform.machine()} "
                   + (torch.cuda.get_device_name() if codec.device.type == "cuda" else f"{torch.get_num_threads()} threads"),
        "torch": torch.__version__, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
        "model_sha256": loaded.sha256, "git_commit": _git_commit(),
    }  # fmt: skip
    presets = dict(PRESETS)
    if args.sweep:
        clips = [(p.stem, load_clip(p, args.sweep_frames, args.crop)) for p in args.sweep_clips]
        record["sweep"], best = sweep(codec, loaded, clips, args)
        record["chosen"] = best
        print("chosen", best, flush=True)
        if best:
            _, spec, fit = parse_candidate(best)
            for name in ("slow", "veryslow"):
                old = presets[name]
                steps = fit.steps if name == "veryslow" else max(1, fit.steps // 3)
                presets[name] = dataclasses.replace(old, spec=spec, fit=dataclasses.replace(old.fit, steps=steps, lr=fit.lr))
    if args.run_frames:
        presets = {n: dataclasses.replace(p, run_frames=args.run_frames) for n, p in presets.items()}
    # attributions: the slowest preset without its rate term, and without its update
    presets["veryslow-rate0"] = dataclasses.replace(presets["veryslow"], name="veryslow-rate0", search_rate=0.0)
    presets["veryslow-noupdate"] = dataclasses.replace(presets["veryslow"], name="veryslow-noupdate", fit=None)
    record["presets"] = {n: {"search_steps": p.search_steps, "search_rate": p.search_rate, "spec": dataclasses.asdict(p.spec),
                             "fit": dataclasses.asdict(p.fit) if p.fit else None} for n, p in presets.items()}  # fmt: skip
    rows = []
    clips = {path: load_clip(path, args.frames, args.crop) for path in args.clips}
    first = [args.presets[0]] + [n for n in args.presets[1:] if n == "veryslow"]  # the target's pair first
    order = [(path, name) for name in first for path in args.clips]
    order += [(path, name) for name in args.presets if name not in first for path in args.clips]
    record["skipped"] = []  # clip and preset pairs past the deadline
    for path, name in order:
        if time.time() - began > args.deadline:
            print("deadline: skipped", path.stem, name, flush=True)
            record["skipped"].append([path.stem, name])
            continue
        row = {"clip": path.stem, **code_clip(codec, loaded, clips[path], presets[name], args.quality, args.gop,
                                              version=args.format)}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({**record, "rows": rows}, indent=1) + "\n")
    record["summary"] = summary = summarise(rows, args.presets)
    print(json.dumps(summary, indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps({**record, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
