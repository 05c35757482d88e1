"""How far the bits depend on the device, on TF32, on --window and on --search (docs/FORMAT.md, "Determinism").

Encodes the first frames of one clip as one chunk with the shipped model on the CPU (the reference)
and, where present, on CUDA with TF32 off (as lfqcodec runs) and on (to show why it is off), with
--window 1 and 3, and with an encoder-side search; counts the bits that differ from the CPU's and,
for plain encoding, the largest CPU latent whose sign flipped. Also decodes the CPU's bits on every
device and reports the largest pixel difference.

    python benchmarks/determinism.py                      # tests/data/carphone_33f.mp4, search 10
    python benchmarks/determinism.py --clip x.mp4 --frames 17 --search 5 --out benchmarks/results/determinism.json
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from lfqcodec.codec.chunks import Codec, _to_model
from lfqcodec.base.atomic import atomic_write_text
from lfqcodec.model.checkpoint import load_model
from lfqcodec.model.device import deterministic, select_device
from lfqcodec.codec.search import SearchConfig
from lfqcodec.io.videoio import read_video_frames

ROOT = Path(__file__).resolve().parent.parent


def tf32(enabled: bool) -> None:
    """TF32 on (as torch's cuDNN default is) or off (lfqcodec's setting)."""
    if not enabled:
        deterministic()
    elif hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
        torch.backends.cudnn.rnn.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=ROOT / "tests/data/carphone_33f.mp4")
    parser.add_argument("--frames", type=int, default=33, help="1 + 4k frames, coded as one chunk")
    parser.add_argument("--model", default=None)
    parser.add_argument("--search", type=int, default=10, help="search steps for the --search rows (0 = none)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args()

    frames = list(itertools.islice(read_video_frames(args.clip), args.frames))
    loaded = load_model(args.model)
    cfg = loaded.config
    height, width = frames[0].shape[:2]
    grid = (-(-height // cfg.spatial_factor), -(-width // cfg.spatial_factor))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    def encode(device: str, window: int, search: int, use_tf32: bool) -> np.ndarray:
        codec = Codec(loaded, select_device(device), window)
        tf32(use_tf32 and device == "cuda")
        try:
            steps = SearchConfig(steps=search) if search else None
            return codec.encode_chunk(iter(frames), len(frames), grid, cfg.num_bits, steps).bits
        finally:
            deterministic()

    reference = encode("cpu", 2, 0, False)
    with torch.no_grad():
        cpu_model = Codec(loaded, select_device("cpu"))
        video = _to_model(frames, grid, cfg.spatial_factor, torch.device("cpu"))
        latents = cpu_model.tokenizer.encoder(video)[0].numpy()  # B x T' x h x w, the chunk coded whole
    rows = []
    settings = [(d, w, 0, False) for d in devices for w in (1, 2, 3)]
    settings += [("cuda", 2, 0, True)] if "cuda" in devices else []
    if args.search:
        settings += [(d, 2, args.search, False) for d in devices]
    search_reference = None
    for device, window, search, use_tf32 in settings:
        bits = encode(device, window, search, use_tf32)
        if search and device == "cpu":
            search_reference = bits
        base = search_reference if search else reference
        differ = bits != base
        row = {"device": device, "window": window, "search": search, "tf32": use_tf32, "bits": int(bits.size),
               "differ_from_cpu": int(differ.sum()), "fraction": float(differ.mean())}  # fmt: skip
        if not search:
            row["largest_flipped_cpu_latent"] = float(np.abs(latents[differ]).max()) if differ.any() else None
        rows.append(row)
        print(json.dumps(row))
    whole = latents > 0
    print(json.dumps({"streamed_vs_whole_chunk_cpu_bits_differ": int((whole != reference).sum())}))

    decoded = {}
    for device in devices:
        codec = Codec(loaded, select_device(device), 2)
        with torch.no_grad():
            decoded[device] = np.concatenate(list(codec.decode_chunk(reference, len(frames), height, width)))
    pixel_rows = {device: int(np.abs(decoded[device].astype(int) - decoded["cpu"]).max()) for device in devices}
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/determinism.py " + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},  # fmt: skip
        "clip": args.clip.name, "frames": len(frames), "model": {"name": loaded.name, "sha256": loaded.sha256},
        "streamed_vs_whole_chunk_cpu_bits_differ": int((whole != reference).sum()),
        "rows": rows,
        "decode_max_pixel_difference_from_cpu": pixel_rows,
    }  # fmt: skip
    print(json.dumps({"decode_max_pixel_difference_from_cpu": pixel_rows}))
    if args.out:
        atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
