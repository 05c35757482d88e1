"""Two decoders on the same bits: PSNR per clip and per position in the chunk, and the pictures.

    python benchmarks/decoder_compare.py CANDIDATE [--base lfq-base] [--bits 16] [--frames 65] [CLIP ...]
        [--out benchmarks/results/decoder-compare.json]

For a candidate trained with ``lfqcodec train --freeze-encoder`` (only the decoder changed), the bits
of a clip are the same under both models, and so is the rate under any coder: the comparison is
decoder against decoder at equal bits per pixel. The bits come from the base model (cached by
:mod:`lfqcodec.training.token_cache`, chunks of 33 frames with scene cuts, as ``lfqcodec encode``), and a
candidate whose encoder differs from the base's is refused. Saves a picture per clip (source | base |
candidate) of the frame where the candidate gains or loses the most, next to the JSON: JPEG at quality
93 without chroma subsampling (about 46 dB against the frames, far above the decoders' 17-25 dB; a
fifth of a PNG's size, which keeps the checkout small enough to travel with the GPU run's pack).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lfqcodec.codec.chunks import Codec
from lfqcodec.model.checkpoint import load_model
from lfqcodec.training.heldout import measuring_clips
from lfqcodec.base.metrics import psnr
from lfqcodec.training.token_cache import clip_tokens
from lfqcodec.io.videoio import VideoSource

HERE = Path(__file__).resolve().parent
PICTURE_QUALITY = 93


def decode(model, tokens, bits: int, height: int, width: int) -> np.ndarray:
    codec = Codec(model, torch.device("cpu"), memory_budget=0)
    parts = []
    for chunk, frames in zip(tokens.chunks, tokens.frames):
        parts.extend(codec.decode_chunk(chunk[:bits], int(frames), height, width))
    return np.concatenate(parts)


def frame_psnr(source: np.ndarray, decoded: np.ndarray) -> list[float]:
    return [psnr(torch.from_numpy(a), torch.from_numpy(b)) for a, b in zip(source, decoded)]


def by_position(values: list[float], frames: list[int], temporal_factor: int) -> list[float]:
    """Mean per-frame PSNR for the chunk's first frame, then each later latent frame."""
    groups: dict[int, list[float]] = {}
    at = 0
    for count in frames:
        for i in range(count):
            groups.setdefault(0 if i == 0 else 1 + (i - 1) // temporal_factor, []).append(values[at + i])
        at += count
    return [round(float(np.mean(groups[k])), 2) for k in sorted(groups)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidate")
    parser.add_argument("clips", nargs="*", type=Path, default=measuring_clips())
    parser.add_argument("--base", default=None, help="model name or path [default: the installed lfq-base]")
    parser.add_argument("--bits", type=int, default=16, help="bits per token (16 = --quality medium)")
    parser.add_argument("--frames", type=int, default=65)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "decoder-compare.json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    base, candidate = load_model(args.base), load_model(args.candidate)
    base_encoder, candidate_encoder = base.tokenizer.encoder.state_dict(), candidate.tokenizer.encoder.state_dict()
    if base_encoder.keys() != candidate_encoder.keys() or not all(
        torch.equal(v.float(), candidate_encoder[k].float()) for k, v in base_encoder.items()
    ):
        raise SystemExit("the candidate's encoder differs from the base's: compare through the encoder instead")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for clip in args.clips:
        tokens = clip_tokens(clip, base, max_frames=args.frames)
        with VideoSource(clip) as source:
            height, width = source.info.height, source.info.width
            source_frames = np.stack([f for _, f in zip(range(sum(tokens.frames)), source.frames())])
        decoded = {name: decode(model, tokens, args.bits, height, width) for name, model in (("base", base), ("candidate", candidate))}
        per_frame = {name: frame_psnr(source_frames, frames) for name, frames in decoded.items()}
        gain = np.array(per_frame["candidate"]) - np.array(per_frame["base"])
        row = {"clip": clip.name, "size": f"{width}x{height}", "frames": len(source_frames)}
        for name, frames in decoded.items():
            row[name] = {"psnr_rgb": round(psnr(torch.from_numpy(source_frames), torch.from_numpy(frames)), 3),
                         "psnr_by_chunk_position": by_position(per_frame[name], tokens.frames, base.config.temporal_factor)}  # fmt: skip
        row["gain_db"] = round(row["candidate"]["psnr_rgb"] - row["base"]["psnr_rgb"], 3)
        shown = int(np.argmax(np.abs(gain)))
        picture = args.out.with_name(f"{args.out.stem}-{clip.stem}-frame{shown}.jpg")
        row_picture = np.concatenate([source_frames[shown], decoded["base"][shown], decoded["candidate"][shown]], 1)
        Image.fromarray(row_picture).save(picture, quality=PICTURE_QUALITY, subsampling=0)
        row["picture"] = {"file": picture.name, "frame": shown, "gain_db": round(float(gain[shown]), 2)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    record = {
        "command": "python benchmarks/decoder_compare.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "base": {"name": base.name, "id": base.model_id.hex()}, "candidate": {"name": candidate.name, "id": candidate.model_id.hex()},
        "bits": args.bits, "rows": rows,
        "mean_gain_db": round(float(np.mean([r["gain_db"] for r in rows])), 3),
    }  # fmt: skip
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print("mean gain", record["mean_gain_db"], "dB")


if __name__ == "__main__":
    main()
