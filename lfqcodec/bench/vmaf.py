"""VMAF (Netflix's Video Multimethod Assessment Fusion) of decoded RGB frames against their source.

Computed by libvmaf inside the static FFmpeg that the ``imageio-ffmpeg`` wheel ships (an optional
dependency: the ``bench`` extra; a 165 MB GPL binary, never a core dependency), with its built-in
model ``vmaf_v0.6.1``. Nothing is downloaded: the model is compiled into the binary.

VMAF is defined on Y'CbCr video, and both sides here are 8-bit RGB (every codec's output is decoded
back to RGB before it is measured, see :mod:`lfqcodec.bench.suite`), so the frames are converted here, in
numpy, the same way for every codec: BT.601 matrix (the luma weights of the project's PSNR-Y and
MS-SSIM-Y, :data:`lfqcodec.base.metrics.BT601_LUMA`), limited range (Y' 16-235, Cb/Cr 16-240, what
VMAF's models were trained on), 4:4:4 (no chroma subsampling; ``vmaf_v0.6.1`` reads luma only).
:data:`CONVERSION` records this, and :func:`settings` everything a JSON record should carry.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.errors import LfqError

MODEL = "vmaf_v0.6.1"
CONVERSION = {"matrix": "bt601", "range": "limited (Y 16-235, Cb/Cr 16-240)", "chroma": "4:4:4", "bit_depth": 8,
              "done_by": "lfqcodec.bench.vmaf.rgb_to_yuv444 (numpy, round to nearest)"}  # fmt: skip
MISSING = "VMAF needs the bench extra (imageio-ffmpeg is missing): pip install 'lfqcodec[bench]'"

# BT.601 R'G'B' (0-255) -> limited-range Y'CbCr (ITU-R BT.601 section 2.5.3, scaled to 8 bits).
_YUV_FROM_RGB = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255
_YUV_OFFSET = np.array([16.0, 128.0, 128.0])


@dataclass(frozen=True)
class VmafScore:
    mean: float  # arithmetic mean of the per-frame scores (libvmaf's default pooling)
    harmonic_mean: float
    min: float
    per_frame: list[float]


@functools.lru_cache(maxsize=1)
def ffmpeg_with_libvmaf() -> str:
    """Path of imageio-ffmpeg's FFmpeg, checked to have the ``libvmaf`` filter; :class:`LfqError` if not."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise LfqError(MISSING) from None
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except (RuntimeError, OSError) as exc:  # no binary for this platform, and none on IMAGEIO_FFMPEG_EXE
        raise LfqError(f"VMAF: imageio-ffmpeg has no FFmpeg here ({exc})") from None
    filters = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True, check=False).stdout
    if " libvmaf " not in filters:
        raise LfqError(f"the FFmpeg of imageio-ffmpeg ({exe}) was built without libvmaf; install imageio-ffmpeg==0.8.1")
    return exe


@functools.lru_cache(maxsize=1)
def settings() -> dict:
    """What a JSON record should say about how VMAF was measured (model, tool versions, conversion)."""
    import imageio_ffmpeg

    exe = ffmpeg_with_libvmaf()
    first_line = subprocess.run([exe, "-version"], capture_output=True, text=True, check=False).stdout.splitlines()
    blank = np.zeros((1, 32, 32, 3), np.uint8)
    libvmaf = _libvmaf_log(blank, blank, threads=1).get("version", "unknown")
    return {"model": MODEL, "libvmaf": libvmaf, "pooling": "arithmetic mean over frames",
            "tool": f"imageio-ffmpeg {imageio_ffmpeg.__version__}: {first_line[0] if first_line else exe}",
            "rgb_to_yuv": CONVERSION}  # fmt: skip


def rgb_to_yuv444(frames: np.ndarray) -> np.ndarray:
    """``T x H x W x 3`` uint8 RGB -> ``T x 3 x H x W`` uint8 planar Y'CbCr (BT.601, limited range)."""
    rgb = [frames[..., c].astype(np.float32) for c in range(3)]
    yuv = np.stack([offset + sum(float(k) * channel for k, channel in zip(row, rgb))
                    for row, offset in zip(_YUV_FROM_RGB, _YUV_OFFSET)], axis=1)  # fmt: skip
    return np.clip(np.rint(yuv), 0, 255).astype(np.uint8)


def vmaf(reference: np.ndarray, distorted: np.ndarray, threads: int | None = None) -> VmafScore:
    """VMAF (``vmaf_v0.6.1``, 0-100, higher is better) of ``distorted`` against ``reference``.

    Both are ``T x H x W x 3`` uint8 RGB of the same shape (from the second frame on, the motion
    feature compares each frame with the one before)."""
    if reference.shape != distorted.shape or reference.ndim != 4 or reference.shape[-1] != 3:
        raise LfqError(f"VMAF: frames of shape {distorted.shape} against {reference.shape}")
    log = _libvmaf_log(reference, distorted, threads or os.cpu_count() or 1)
    per_frame = [float(f["metrics"]["vmaf"]) for f in log["frames"]]
    if len(per_frame) != len(reference):
        raise LfqError(f"VMAF: libvmaf scored {len(per_frame)} of {len(reference)} frames")
    pooled = log["pooled_metrics"]["vmaf"]
    return VmafScore(mean=float(np.mean(per_frame)), harmonic_mean=float(pooled["harmonic_mean"]),
                     min=float(pooled["min"]), per_frame=per_frame)  # fmt: skip


def _libvmaf_log(reference: np.ndarray, distorted: np.ndarray, threads: int) -> dict:
    """Run FFmpeg's libvmaf filter on the two clips (raw 4:4:4 files in a temporary folder); its JSON log."""
    exe = ffmpeg_with_libvmaf()
    frames, height, width = reference.shape[:3]
    with tempfile.TemporaryDirectory(prefix="lfqcodec-vmaf-") as tmp:
        for name, video in (("distorted.yuv", distorted), ("reference.yuv", reference)):
            with open(Path(tmp) / name, "wb") as f:
                for start in range(0, frames, 16):  # converted in slices: memory stays small for long clips
                    f.write(rgb_to_yuv444(video[start : start + 16]).tobytes())
        raw = ["-f", "rawvideo", "-pix_fmt", "yuv444p", "-s", f"{width}x{height}", "-framerate", "25"]
        # libvmaf's first input is the distorted clip, the second the reference; the log is written
        # by a relative name (cwd = tmp) so no path needs filter-graph escaping.
        graph = f"[0:v][1:v]libvmaf=model=version={MODEL}:log_fmt=json:log_path=vmaf.json:n_threads={threads}"
        command = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", *raw, "-i", "distorted.yuv", *raw,
                   "-i", "reference.yuv", "-lavfi", graph, "-f", "null", "-"]  # fmt: skip
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=False)
        log_path = Path(tmp) / "vmaf.json"
        if done.returncode != 0 or not log_path.is_file():
            message = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise LfqError(f"VMAF: ffmpeg/libvmaf failed on {width}x{height} frames: {message}")
        return json.loads(log_path.read_text())
