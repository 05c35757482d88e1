"""``lfqcodec bench``: rate-distortion and speed of lfqcodec against FFmpeg's encoders, in one run.

For every clip, the same first ``frames`` RGB frames go to every codec; every codec's output is
decoded back to RGB and compared with them, so all metrics are computed the same way:

* bits per pixel and kbit/s from the real output sizes (``.lfq`` container, or the muxed
  ``.mkv`` of the reference codec),
* PSNR over RGB and over BT.601 luma, and MS-SSIM on luma (:mod:`lfqcodec.base.metrics`),
* VMAF (``vmaf_v0.6.1``, libvmaf in imageio-ffmpeg's FFmpeg; RGB converted to BT.601 limited-range
  Y'CbCr the same way for every codec, :mod:`lfqcodec.bench.vmaf`),
* encode and decode frames per second, and the peak resident memory (RSS) of each encode and each
  decode, each run in a fresh process of its own (:mod:`lfqcodec.bench.runs`).

lfqcodec runs at one or several encoder presets (each its own curve) and at a chosen subset of its
qualities; the table and the plot are :mod:`lfqcodec.bench.report`.

Reference codecs (through PyAV, all ``yuv420p``, a keyframe at least every ``gop`` frames and each
encoder's own scene-cut detection on, as lfqcodec starts a chunk at least every ``gop`` frames and
at each scene cut it detects):

==========  ============================  ======================================
x265        libx265, preset ``medium``    CRF 16 .. 51 (wide enough to reach lfqcodec's rates)
x264        libx264, preset ``medium``    CRF 16 .. 51
svtav1      libsvtav1, preset 8           CRF 20 .. 63
==========  ============================  ======================================

BD-rate (Bjøntegaard delta rate) of lfqcodec against x265 uses the maintained ``bjontegaard``
package (piecewise cubic interpolation) over the overlap of the two curves' quality ranges (on PSNR,
PSNR-Y, MS-SSIM-Y and VMAF), and says so when they do not overlap; it gives the overlap as a share of
each curve's range and marks a BD-rate over less than half of the narrower curve's range as not
meaningful. With ``frames_png``, one frame
per clip is also shown side by side for the source, lfqcodec and x265 (:mod:`lfqcodec.bench.pictures`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from . import runs
from ..model.checkpoint import load_model
from ..base.errors import LfqError
from ..base.metrics import ms_ssim, psnr, rgb_to_luma
from ..presets.preset import Preset

REFERENCE_CODECS: dict[str, dict] = {
    "x265": {"codec": "libx265", "crfs": [16, 22, 27, 32, 37, 42, 47, 51], "options": {"preset": "medium"},
             "params_key": "x265-params", "params": "keyint={gop}:min-keyint=1:log-level=error"},
    "x264": {"codec": "libx264", "crfs": [16, 22, 27, 32, 37, 42, 47, 51], "options": {"preset": "medium"},
             "params_key": "x264-params", "params": "keyint={gop}:min-keyint=1"},
    "svtav1": {"codec": "libsvtav1", "crfs": [20, 30, 40, 48, 55, 63], "options": {"preset": "8"},
               "params_key": "svtav1-params", "params": "keyint={gop}:scd=1"},
}  # fmt: skip


BD_METRICS = ("psnr_rgb", "psnr_y", "ms_ssim_y", "vmaf")
MEANINGFUL_OVERLAP = 0.5  # a BD-rate over less of the narrower curve's quality range is marked not meaningful


@dataclass
class RdPoint:
    clip: str
    codec: str
    setting: str
    device: str
    frames: int
    width: int
    height: int
    bytes: int
    bpp: float
    kbit_s: float
    psnr_rgb: float
    psnr_y: float
    ms_ssim_y: float
    vmaf: float  # mean of the per-frame vmaf_v0.6.1 scores, 0-100
    encode_fps: float
    decode_fps: float
    encode_peak_mib: float | None  # peak RSS of the process that ran the encode alone (MEMORY_NOTE)
    decode_peak_mib: float | None
    preset: str | None = None  # lfqcodec's encoder preset (None for the reference codecs)


MEMORY_NOTE = ("peak resident memory (RSS) of a fresh process that ran that one encode or decode "
               "(Python, NumPy, PyAV and torch imported; frames read and written a frame at a time)")
FPS_NOTE = ("frames over the wall time of the encode or decode call in its own process, the model already loaded "
            "(the call's first-use set-up included, as in a real run)")


def curve_name(clip: str, preset: str | None) -> str:
    """The key of a clip's BD-rates: the clip for lfqcodec's default preset (medium), else ``CLIP (preset P)``."""
    return clip if preset in (None, "medium") else f"{clip} (preset {preset})"


def read_clip(path: Path, frames: int) -> tuple[np.ndarray, Fraction]:
    """First ``frames`` RGB frames of ``path`` and its frame rate."""
    from ..io.videoio import VideoSource

    with VideoSource(path) as source:
        clip = [frame for frame, _ in zip(source.frames(), range(frames))]
        fps = source.info.fps
    if not clip:
        raise LfqError(f"{path}: no frames")
    return np.stack(clip), fps


def quality_metrics(reference: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    ref = torch.from_numpy(reference).permute(0, 3, 1, 2).double()
    out = torch.from_numpy(decoded).permute(0, 3, 1, 2).double()
    ref_y, out_y = rgb_to_luma(ref), rgb_to_luma(out)
    return {"psnr_rgb": psnr(ref, out), "psnr_y": psnr(ref_y, out_y), "ms_ssim_y": ms_ssim(ref_y, out_y)}


def run_reference(name: str, crf: int, frames: np.ndarray, fps: Fraction, gop: int, workdir: Path | None = None,
                  raw: Path | None = None) -> tuple[int, np.ndarray, dict]:  # fmt: skip
    """Encode ``frames`` with reference codec ``name`` at ``crf`` into an ``.mkv`` and decode it back, each
    in a process of its own (:mod:`lfqcodec.bench.runs`). ``raw``: ``frames`` already in a raw file."""
    spec = REFERENCE_CODECS[name]
    options = {**spec["options"], "crf": str(crf), spec["params_key"]: spec["params"].format(gop=gop)}
    shape = frames.shape[1:]
    with _scratch(workdir) as tmp:
        raw = raw or _raw_clip(frames, tmp)
        mkv, back = tmp / f"{name}-{crf}.mkv", tmp / f"{name}-{crf}.rgb"
        what = f"{name} at crf {crf} on {shape[1]}x{shape[0]} frames"
        encode_s, encode_mib = runs.in_own_process(what, runs.reference_encode, raw, shape, fps, mkv, spec["codec"],
                                                   options)  # fmt: skip
        decode_s, decode_mib = runs.in_own_process(what, runs.reference_decode, mkv, back, shape)
        size, decoded = mkv.stat().st_size, _read_back(back, frames.shape)
    timing = {"encode_s": encode_s, "decode_s": decode_s, "encode_peak_mib": encode_mib, "decode_peak_mib": decode_mib}
    return size, decoded, timing


def run_lfq(model: str | None, quality: str, frames: np.ndarray, fps: Fraction, gop: int, device: str, workdir: Path,
            search_steps: int = 0, preset: str | Preset = "medium", raw: Path | None = None) -> tuple[int, np.ndarray, dict]:  # fmt: skip
    """Encode ``frames`` with lfqcodec (``model``: a name or path; ``preset``: a name or the
    :class:`~lfqcodec.presets.preset.Preset` itself) and decode them back, each in a process of its own
    (:mod:`lfqcodec.bench.runs`)."""
    from ..presets.preset import resolve

    preset = resolve(preset) if isinstance(preset, str) else preset
    shape = frames.shape[1:]
    raw = raw or _raw_clip(frames, workdir)
    stem = workdir / f"bench-{preset.name}-{quality}-{device}"
    path, back = stem.with_suffix(".lfq"), stem.with_suffix(".rgb")
    what = f"lfqcodec {preset.name} {quality}"
    encode_s, encode_mib = runs.in_own_process(what, runs.lfq_encode, raw, shape, fps, path, model, quality, preset,
                                               device, gop, search_steps)  # fmt: skip
    decode_s, decode_mib = runs.in_own_process(what, runs.lfq_decode, path, back, model, device)
    size, decoded = path.stat().st_size, _read_back(back, frames.shape)
    path.unlink()
    back.unlink()
    timing = {"encode_s": encode_s, "decode_s": decode_s, "encode_peak_mib": encode_mib, "decode_peak_mib": decode_mib}
    return size, decoded, timing


@contextlib.contextmanager
def _scratch(workdir: Path | None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir=workdir, prefix="lfqcodec-bench-") as tmp:
        yield Path(tmp)


def _raw_clip(frames: np.ndarray, folder: Path) -> Path:
    path = folder / f"clip-{secrets.token_hex(4)}.rgb"
    runs.write_raw(path, frames)
    return path


def _read_back(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    decoded = np.fromfile(path, np.uint8)
    frame = int(np.prod(shape[1:]))
    return decoded[: len(decoded) // frame * frame].reshape(-1, *shape[1:])


def _point(clip: str, codec: str, setting: str, device: str, frames: np.ndarray, fps: Fraction, size: int,
           decoded: np.ndarray, timing: dict) -> tuple[RdPoint, list[float]]:  # fmt: skip
    """The measured point, and the per-frame VMAF (for the pictures)."""
    from .vmaf import vmaf

    n, h, w = frames.shape[:3]
    if decoded.shape != frames.shape:
        raise LfqError(f"{codec} {setting}: decoded {decoded.shape}, expected {frames.shape}")
    score = vmaf(frames, decoded)
    point = RdPoint(
        clip=clip, codec=codec, setting=setting, device=device, frames=n, width=w, height=h, bytes=size,
        bpp=size * 8 / (n * h * w), kbit_s=size * 8 / 1000 / float(n / fps), **quality_metrics(frames, decoded),
        vmaf=score.mean, encode_fps=n / timing["encode_s"], decode_fps=n / timing["decode_s"],
        encode_peak_mib=timing["encode_peak_mib"], decode_peak_mib=timing["decode_peak_mib"],
    )  # fmt: skip
    return point, score.per_frame


def bd_rate(anchor: list[RdPoint], test: list[RdPoint], metric: str) -> dict:
    """BD-rate (percent; negative = test needs fewer bits) of ``test`` against ``anchor`` on ``metric``.

    It is computed over the overlap of the two curves' quality ranges alone; ``overlap_share`` gives
    that overlap as a share of each curve's range, and ``meaningful`` is false when it covers less than
    half of the narrower curve's range (a number over a sliver of overlap says little of either curve)."""
    import bjontegaard

    dropped = 0

    def curve(points: list[RdPoint]) -> tuple[np.ndarray, np.ndarray]:
        """Points by rate, keeping only those better than every cheaper one (the interpolation needs
        quality to rise with rate; e.g. VMAF can fall from medium to high)."""
        nonlocal dropped
        kept: list[tuple[float, float]] = []
        for rate, dist in sorted((p.bpp, getattr(p, metric)) for p in points if np.isfinite(getattr(p, metric))):
            if kept and (dist <= kept[-1][1] or rate <= kept[-1][0]):
                dropped += 1
                continue
            kept.append((rate, dist))
        return np.array([r for r, _ in kept]), np.array([d for _, d in kept])

    rate_a, dist_a = curve(anchor)
    rate_t, dist_t = curve(test)
    note = f"{dropped} point(s) left out: no better than a cheaper one" if dropped else ""
    if len(rate_a) < 2 or len(rate_t) < 2:
        return {"bd_rate_percent": None, "note": "fewer than two points on a curve" + (f" ({note})" if note else "")}
    low, high = max(dist_a.min(), dist_t.min()), min(dist_a.max(), dist_t.max())
    if high <= low:
        return {"bd_rate_percent": None, "overlap": None,
                "note": f"no overlap in {metric}: anchor {dist_a.min():.3f}..{dist_a.max():.3f}, "
                        f"lfqcodec {dist_t.min():.3f}..{dist_t.max():.3f}"}  # fmt: skip
    import warnings

    share = {"anchor": float((high - low) / np.ptp(dist_a)), "test": float((high - low) / np.ptp(dist_t))}
    overlap = {"overlap": [float(low), float(high)], "overlap_share": share,
               "meaningful": max(share.values()) >= MEANINGFUL_OVERLAP}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = bjontegaard.bd_rate(rate_a, dist_a, rate_t, dist_t, method="pchip", require_matching_points=False)
        except ValueError as exc:  # a curve the interpolation refuses: no number rather than no bench
            return {"bd_rate_percent": None, **overlap, "note": f"not computed: {exc}"}
    return {"bd_rate_percent": float(value), **overlap, "note": note}


def run_bench(
    clips: list[Path],
    frames: int = 33,
    codecs: list[str] = ("x265",),
    model: str | None = None,
    gop: int = 33,
    devices: list[str] | None = None,
    workdir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    search_steps: int = 0,
    frames_png: Path | None = None,
    presets: list[str] | None = None,
    qualities: list[str] | None = None,
) -> dict:
    """Run the whole comparison; returns a JSON-serialisable record. ``search_steps``: lfqcodec's
    encoder-side bit search (``lfqcodec encode --search``), 0 = off. ``frames_png``: a folder where
    one side-by-side picture per clip is written (``CLIP.png``, :mod:`lfqcodec.bench.pictures`; the first
    preset's points). ``presets`` (default ``["medium"]``): lfqcodec's encoder presets, each a curve of
    its own; ``qualities`` (default: all of the model's): the points of each curve."""
    from . import pictures, vmaf
    from ..presets.preset import resolve

    unknown = [c for c in codecs if c not in REFERENCE_CODECS]
    if unknown:
        raise LfqError(f"unknown codec(s) {', '.join(unknown)} (available: {', '.join(REFERENCE_CODECS)})")
    missing = [c for c in codecs if REFERENCE_CODECS[c]["codec"] not in av.codecs_available]
    if missing:
        raise LfqError(f"this FFmpeg build lacks {', '.join(REFERENCE_CODECS[c]['codec'] for c in missing)}")
    loaded = load_model(model)
    presets = list(presets or ["medium"])
    chosen = [resolve(name) for name in presets]  # here: a fresh process runs the preset this one resolved
    bits = loaded.config.quality_bits
    unknown = [q for q in qualities or () if q not in bits]
    if unknown:
        raise LfqError(f"unknown quality {unknown[0]!r} (this model has {', '.join(bits)})")
    qualities = sorted(qualities or bits, key=bits.get)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only (it prints its config per encode otherwise)
    av.logging.set_level(av.logging.ERROR)
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    torch.set_num_threads(os.cpu_count() or 1)
    vmaf_settings = vmaf.settings()  # also fails early, in one line, when the VMAF tool is missing
    points: list[RdPoint] = []
    shown: list[dict] = []
    say = progress or (lambda message: None)
    with _scratch(workdir) as tmp:
        for clip_path in clips:
            clip, fps = read_clip(clip_path, frames)
            name = clip_path.name
            raw = _raw_clip(clip, tmp)
            picture = pictures.FramePicture(name, clip, pictures.choose_crop(clip, gop)) if frames_png else None

            def measured(codec: str, setting: str, device: str, size: int, decoded: np.ndarray, timing: dict,
                         preset: str = presets[0]) -> None:  # fmt: skip
                point, vmaf_per_frame = _point(name, codec, setting, device, clip, fps, size, decoded, timing)
                point.preset = preset if codec == "lfqcodec" else None
                points.append(point)
                if picture is not None and preset == presets[0]:
                    picture.add(point, decoded, clip, vmaf_per_frame)

            for device in devices:
                for preset in chosen:
                    for quality in qualities:
                        say(f"{name}: lfqcodec {preset.name} {quality} on {device}")
                        measured("lfqcodec", quality, device, *run_lfq(model, quality, clip, fps, gop, device, tmp,
                                                                       search_steps, preset, raw), preset=preset.name)  # fmt: skip
            for codec in codecs:
                for crf in REFERENCE_CODECS[codec]["crfs"]:
                    say(f"{name}: {codec} crf {crf}")
                    measured(codec, f"crf{crf}", "cpu", *run_reference(codec, crf, clip, fps, gop, tmp, raw))
            raw.unlink()
            if picture is not None:
                shown.append(picture.render(frames_png / f"{Path(name).stem}.png"))
    bd = {}
    for clip_name in dict.fromkeys(p.clip for p in points):
        anchor = [p for p in points if p.clip == clip_name and p.codec == "x265"]
        for preset in presets if anchor else ():
            ours = [p for p in points if p.clip == clip_name and p.codec == "lfqcodec" and p.device == "cpu"
                    and p.preset == preset]  # fmt: skip
            bd[curve_name(clip_name, preset)] = {metric: bd_rate(anchor, ours, metric) for metric in BD_METRICS}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_cores": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "ffmpeg": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()}, "pyav": av.__version__},  # fmt: skip
        "model": {"name": loaded.name, "sha256": loaded.sha256},
        "settings": {"frames": frames, "gop": gop, "lfqcodec_search_steps": search_steps, "lfqcodec_presets": presets,
                     "lfqcodec_qualities": qualities, "codecs": {c: {k: v for k, v in REFERENCE_CODECS[c].items()} for c in codecs},
                     "reference_threads": "FFmpeg default (all cores)", "pix_fmt": "yuv420p",
                     "peak_mib": MEMORY_NOTE, "fps": FPS_NOTE},  # fmt: skip
        "vmaf": vmaf_settings,
        "points": [asdict(p) for p in points],
        "bd_rate_vs_x265": bd,
        "pictures": shown,
    }
