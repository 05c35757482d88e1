"""Network-only speed of the chunk coder: release 1873cc4 against this checkout's precisions.

    python benchmarks/speed_network.py --prepare frames.npz [--clip cockatoo.mp4] [--frames 17]   # needs PyAV
    python benchmarks/speed_network.py frames.npz [--release /tmp/rel-1873cc4] [--threads 2] [--out results.json]

The second form needs only torch and numpy (no PyAV, safetensors or zstandard: the modules that
``lfqcodec`` imports for file I/O are stubbed, and the shipped weights are read straight from the
safetensors layout), so it runs on machines set up for something else, e.g. one with AMX, where
bf16 is native. Frames go through ``Codec.encode_chunk`` / ``decode_chunk`` (streamed windows,
as the CLI runs them) at ``--threads`` threads, each variant in a fresh child process with
``PYTHONPATH`` at its checkout; reported: fps, the fraction of medium-quality bits that differ
from the release's fp32 bits, the largest release latent whose sign differs, and decoded PSNR.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STUBBED = ("av", "av.error", "safetensors", "safetensors.torch", "zstandard")


def read_safetensors(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a ``.safetensors`` file, without the safetensors package."""
    import torch

    dtypes = {"F16": torch.float16, "F32": torch.float32, "BF16": torch.bfloat16}
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        lo, hi = info["data_offsets"]
        raw = bytearray(data[8 + size + lo : 8 + size + hi])
        tensors[name] = torch.frombuffer(raw, dtype=dtypes[info["dtype"]]).reshape(info["shape"]).float()
    return tensors, meta


def child(frames_path: str, precision: str | None, threads: int, out: str) -> dict:
    import importlib.util
    from unittest import mock

    for name in STUBBED:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            sys.modules[name] = mock.MagicMock()
    import torch

    from lfqcodec.codec.chunks import Codec
    from lfqcodec.model.checkpoint import LoadedModel
    from lfqcodec.model.config import TokenizerConfig
    from lfqcodec.model.tokenizer import TokenizerNet

    torch.set_num_threads(threads)
    state, meta = read_safetensors(ROOT / "models" / "lfq-base.safetensors")
    cfg = TokenizerConfig.from_dict(json.loads(meta["lfqcodec.config"]))
    tokenizer = TokenizerNet(cfg)
    tokenizer.load_state_dict(state)
    model = LoadedModel("lfq-base", meta.get("lfqcodec.sha256", ""), cfg, tokenizer.eval())
    frames = np.load(frames_path)["frames"]
    n, h, w = frames.shape[:3]
    s = cfg.spatial_factor
    grid = (-(-h // s), -(-w // s))
    codec = Codec(model, torch.device("cpu"), 2) if precision is None else Codec(model, torch.device("cpu"), 2, precision)
    latents: list = []
    codec.tokenizer.encoder.register_forward_hook(lambda _m, _i, z: latents.append(z.float()))
    keep = cfg.quality_bits["medium"]
    row = {"mode": codec.mode.describe() if hasattr(codec, "mode") else "fp32 (release)", "threads": threads}
    for attempt in range(2):  # the first run warms oneDNN's kernel caches; the second is reported
        latents.clear()
        started = time.perf_counter()
        bits = codec.encode_chunk(iter(frames), n, grid, keep).bits[:keep]
        row["encode_fps"] = n / (time.perf_counter() - started)
        started = time.perf_counter()
        decoded = np.concatenate(list(codec.decode_chunk(bits, n, h, w)))
        row["decode_fps"] = n / (time.perf_counter() - started)
    mse = np.mean((decoded.astype(np.float64) - frames.astype(np.float64)) ** 2)
    row["psnr_rgb"] = float(10 * np.log10(255**2 / mse))
    np.save(out, torch.cat(latents, dim=2)[0, :keep].numpy())
    return row


def _pattern(index: int, height: int, width: int) -> np.ndarray:
    """A moving colour pattern (``benchmarks/speed_memory.py``'s): speed does not depend on content."""
    y, x = np.ogrid[0:height, 0:width]
    frame = np.stack([np.sin((x + 3 * index) / (9 + 4 * c)) * np.cos((y - index) / (11 + 3 * c)) for c in range(3)], -1)
    return ((frame + 1) * 127.5).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("frames", type=Path, nargs="?", help=".npz made by --prepare")
    parser.add_argument("--prepare", type=Path, help="write FRAMES frames of --clip to this .npz and stop")
    parser.add_argument("--clip", type=Path, default=Path("/work/shared/data/video/cockatoo.mp4"),
                        help="a real clip; 'synthetic' makes a 1280x720 moving pattern instead (no PyAV needed)")
    parser.add_argument("--frames", dest="count", type=int, default=17)
    parser.add_argument("--release", type=Path, default=Path("/tmp/rel-1873cc4"))
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, precision, threads, out = args.child
        print(json.dumps(child(path, None if precision == "release" else precision, int(threads), out)))
        return
    if args.prepare:
        if str(args.clip) == "synthetic":
            frames = np.stack([_pattern(i, 720, 1280) for i in range(args.count)])
        else:
            from lfqcodec.bench.suite import read_clip

            frames = read_clip(args.clip, args.count)[0]
        np.savez_compressed(args.prepare, frames=frames)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            reference = None
            for variant in ("release", "fp32", "bf16", "auto"):
                root = args.release if variant == "release" else ROOT
                out = Path(tmp) / f"{variant}.npy"
                cmd = [sys.executable, __file__, "--child", str(args.frames), variant, str(threads), str(out)]
                result = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
                if result.returncode:
                    print(result.stderr[-3000:], file=sys.stderr)
                    continue
                row = {"variant": variant, **json.loads(result.stdout.strip().splitlines()[-1])}
                z = np.load(out)
                if reference is None:
                    reference = z
                flips = (z > 0) != (reference > 0)
                row["bits_differing_from_release"] = float(flips.mean())
                row["largest_release_latent_flipped"] = float(np.abs(reference)[flips].max()) if flips.any() else 0.0
                print(json.dumps(row), file=sys.stderr, flush=True)
                rows.append(row)
    import torch

    flags = set()
    if Path("/proc/cpuinfo").exists():
        flags = {f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
                 for f in line.split(":", 1)[1].split()}  # fmt: skip
    record = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, bf16 flags: "
                   f"{sorted(flags & {'amx_bf16', 'avx512_bf16', 'amx_tile'}) or 'none'}",
        "frames": f"{args.frames.name}: {np.load(args.frames)['frames'].shape}",
        "rows": rows,
    }  # fmt: skip
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
