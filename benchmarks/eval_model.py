"""Rate and distortion of an lfqcodec model on real clips, through the real encoder and container.

    python benchmarks/eval_model.py [CLIP ...] [--frames 65] [--model lfq-base] [--out benchmarks/results/eval.json]

Default clips are the two shared clips held out from training (bikes, carphone). For each clip and
quality the clip's first ``--frames`` frames are encoded to ``.lfq`` (file size, container included,
gives bits per pixel), decoded to lossless FFV1, and compared with the source frames: PSNR over RGB,
MS-SSIM (mean over frames), VMAF (``vmaf_v0.6.1``, mean over frames, :mod:`lfqcodec.bench.vmaf`; needs the
bench extra), the mean per-frame PSNR by position in the chunk (first frame, then
each later latent frame: a decoder that loses quality far from the chunk's start shows it), and a flicker measure at chunk boundaries: the mean absolute error of
the frame-to-frame change (decoded vs. source) on the first frame of each chunk, next to the same
measure inside chunks (a decoder that jumps at chunk starts shows a larger first number). A side-by-side PNG (source | decoded) of the middle frame is saved next
to the JSON, so the pictures can be looked at, not only the numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

import lfqcodec
from lfqcodec.api import DEFAULT_SCENECUT
from lfqcodec.model.checkpoint import load_model
from lfqcodec.base.errors import LfqError
from lfqcodec.base.metrics import ms_ssim, psnr
from lfqcodec.bench.vmaf import settings as vmaf_settings
from lfqcodec.bench.vmaf import vmaf
from lfqcodec.io.videoio import VideoWriter

HERE = Path(__file__).resolve().parent
DEFAULT_CLIPS = [HERE.parent.parent / "shared/data/video/bikes.mp4", HERE.parent.parent / "shared/data/video/carphone_pristine.mp4"]


def read_frames(path: Path, count: int) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(count))])


def save_side_by_side(path: Path, left: np.ndarray, right: np.ndarray) -> None:
    image = np.concatenate([left, np.full((left.shape[0], 4, 3), 255, np.uint8), right], axis=1)
    writer = VideoWriter(path, image.shape[1], image.shape[0], Fraction(1))
    writer.write(image)
    writer.close()


def temporal_error(source: np.ndarray, decoded: np.ndarray, starts: list[int]) -> tuple[float, float]:
    """Mean |(decoded[t] - decoded[t-1]) - (source[t] - source[t-1])| (0..255) on chunk-start
    frames ``t`` in ``starts`` and on all other frames ``t >= 1``."""
    def change(v: np.ndarray) -> np.ndarray:
        return np.diff(v.astype(np.float32), axis=0)

    error = np.abs(change(decoded) - change(source)).mean(axis=(1, 2, 3))  # error[t-1] is frame t
    at_starts = [error[t - 1] for t in starts if t >= 1]
    inside = [error[t - 1] for t in range(1, len(source)) if t not in starts]
    return float(np.mean(at_starts)) if at_starts else float("nan"), float(np.mean(inside))


def psnr_by_chunk_position(per_frame: list[float], starts: list[int], temporal_factor: int = 4) -> list[float]:
    """Mean per-frame PSNR by position in the chunk: ``[0]`` the chunk's first frame (coded alone),
    ``[k]`` frames ``4k-3 .. 4k`` after it (the chunk's k-th later latent frame)."""
    groups: dict[int, list[float]] = {}
    for t, value in enumerate(per_frame):
        start = max(s for s in starts if s <= t)
        groups.setdefault(-(-(t - start) // temporal_factor), []).append(value)
    return [round(float(np.mean(groups[k])), 2) for k in sorted(groups)]


def evaluate(
    clips: list[Path], frames: int, model: str | None, gop: int, out_dir: Path, scenecut: float = DEFAULT_SCENECUT,
    search_steps: int = 0, qualities: tuple[str, ...] = ("low", "medium", "high"),
) -> list[dict]:  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            source = read_frames(clip, frames)
            ref = torch.from_numpy(source).float().permute(0, 3, 1, 2)
            for quality in qualities:
                lfq, back = Path(tmp) / "x.lfq", Path(tmp) / "x.mkv"
                enc = lfqcodec.encode_file(clip, lfq, model=model, quality=quality, gop=gop, scenecut=scenecut, device="cpu",
                                           search_steps=search_steps, max_frames=frames, overwrite=True)  # fmt: skip
                dec = lfqcodec.decode_file(lfq, back, device="cpu", model=model, overwrite=True)
                decoded = read_frames(back, frames)
                starts = [c["first_frame"] for c in lfqcodec.read_info(lfq)["chunks"]]
                flicker_start, flicker_inside = temporal_error(source, decoded, starts)
                out = torch.from_numpy(decoded).float().permute(0, 3, 1, 2)
                score = vmaf(source, decoded)
                per_frame = [round(psnr(ref[i : i + 1], out[i : i + 1]), 2) for i in range(len(ref))]
                mid = len(source) // 2
                suffix = f"-search{search_steps}" if search_steps else ""
                save_side_by_side(out_dir / f"{clip.stem}-{quality}{suffix}.png", source[mid], decoded[mid])
                rows.append({
                    "clip": clip.name, "quality": quality, "search_steps": search_steps, "frames": len(source),
                    "width": source.shape[2], "height": source.shape[1], "file_bytes": enc.file_bytes,
                    "bpp": enc.bits_per_pixel, "kbit_s": enc.kbit_per_second,
                    "psnr_rgb": psnr(ref, out), "ms_ssim": ms_ssim(ref, out), "vmaf": score.mean, "vmaf_min": score.min,
                    "psnr_per_frame": per_frame,
                    "psnr_by_chunk_position": psnr_by_chunk_position(per_frame, starts),
                    "encode_fps": len(source) / enc.seconds, "decode_fps": len(source) / dec.seconds,
                    "chunk_starts": starts, "temporal_error_chunk_start": flicker_start,
                    "temporal_error_inside": flicker_inside,
                })  # fmt: skip
                r = rows[-1]
                print(f"{clip.name:24s} {quality:6s} {r['bpp']:.4f} bpp {r['psnr_rgb']:6.2f} dB "
                      f"MS-SSIM {r['ms_ssim']:.4f} VMAF {r['vmaf']:.1f}  enc {r['encode_fps']:.1f} fps dec {r['decode_fps']:.1f} fps  "
                      f"temporal error at chunk starts {flicker_start:.2f} / inside {flicker_inside:.2f}",
                      file=sys.stderr)  # fmt: skip
                print(f"{'':24s} PSNR by position in chunk: {r['psnr_by_chunk_position']}", file=sys.stderr)
    return rows


def summary(rows: list[dict]) -> dict:
    out = {}
    for quality in dict.fromkeys(r["quality"] for r in rows):
        sel = [r for r in rows if r["quality"] == quality]
        out[quality] = {k: float(np.mean([r[k] for r in sel])) for k in ("bpp", "psnr_rgb", "ms_ssim", "vmaf")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="*", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--frames", type=int, default=65)
    parser.add_argument("--gop", type=int, default=33)
    parser.add_argument("--model", default=None)
    parser.add_argument("--scenecut", type=float, default=DEFAULT_SCENECUT, help="0 = chunks of exactly --gop frames")
    parser.add_argument("--search", type=int, default=0, help="lfqcodec encode --search steps (0 = off)")
    parser.add_argument("--quality", nargs="+", default=None, help="levels of the model (default: all of them)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "eval-lfq-base.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        vmaf_record = vmaf_settings()  # fails here, in one line, when the VMAF tool is missing
    except LfqError as exc:
        sys.exit(f"eval_model.py: error: {exc}")
    torch.set_num_threads(os.cpu_count() or 1)
    qualities = tuple(args.quality or load_model(args.model).config.quality_bits)
    rows = evaluate(args.clips, args.frames, args.model, args.gop, args.out.parent, args.scenecut, args.search,
                    qualities)
    record = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], HERE.parent), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "model": {"name": args.model or "lfq-base", "sha256": load_model(args.model).sha256},
        "vmaf": vmaf_record,
        "rows": rows,
        "mean": summary(rows),
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["mean"], indent=2))


if __name__ == "__main__":
    main()
