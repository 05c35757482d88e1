"""``lfqcodec bench``: rate-distortion and speed of lfqcodec against FFmpeg's encoders, in one run.

For every clip, the same first ``frames`` RGB frames go to every codec; every codec's output is
decoded back to RGB and compared with them, so all metrics are computed the same way:

* bits per pixel and kbit/s from the real output sizes (``.lfq`` container, or the muxed
  ``.mkv`` of the reference codec),
* PSNR over RGB and over BT.601 luma, and MS-SSIM on luma (:mod:`lfqcodec.metrics`),
* VMAF (``vmaf_v0.6.1``, libvmaf in imageio-ffmpeg's FFmpeg; RGB converted to BT.601 limited-range
  Y'CbCr the same way for every codec, :mod:`lfqcodec.vmaf`),
* encode and decode frames per second and the peak increase of resident memory while each ran.

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
PSNR-Y, MS-SSIM-Y and VMAF), and says so when they do not overlap. With ``frames_png``, one frame
per clip is also shown side by side for the source, lfqcodec and x265 (:mod:`lfqcodec.pictures`).
"""

from __future__ import annotations

import datetime
import io
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from .atomic import atomic_open, check_destination
from .checkpoint import LoadedModel, load_model
from .errors import LfqError
from .metrics import ms_ssim, psnr, rgb_to_luma
from .videoio import mux_frames

REFERENCE_CODECS: dict[str, dict] = {
    "x265": {"codec": "libx265", "crfs": [16, 22, 27, 32, 37, 42, 47, 51], "options": {"preset": "medium"},
             "params_key": "x265-params", "params": "keyint={gop}:min-keyint=1:log-level=error"},
    "x264": {"codec": "libx264", "crfs": [16, 22, 27, 32, 37, 42, 47, 51], "options": {"preset": "medium"},
             "params_key": "x264-params", "params": "keyint={gop}:min-keyint=1"},
    "svtav1": {"codec": "libsvtav1", "crfs": [20, 30, 40, 48, 55, 63], "options": {"preset": "8"},
               "params_key": "svtav1-params", "params": "keyint={gop}:scd=1"},
}  # fmt: skip


BD_METRICS = ("psnr_rgb", "psnr_y", "ms_ssim_y", "vmaf")


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
    encode_peak_mib: float | None
    decode_peak_mib: float | None


class PeakMemory:
    """Samples this process's resident memory in a thread; ``peak_mib`` is the rise over the start."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak_mib: float | None = None

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self._rss()
            if rss is not None:
                self._peak = max(self._peak, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._start = self._rss()
        self._peak = self._start or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._start is not None:
            self.peak_mib = (self._peak - self._start) / 2**20


def read_clip(path: Path, frames: int) -> tuple[np.ndarray, Fraction]:
    """First ``frames`` RGB frames of ``path`` and its frame rate."""
    from .videoio import VideoSource

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


def _pad_even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else frames


def run_reference(name: str, crf: int, frames: np.ndarray, fps: Fraction, gop: int) -> tuple[int, np.ndarray, dict]:
    """Encode ``frames`` with reference codec ``name`` at ``crf`` into an in-memory ``.mkv``; decode it back.

    Each run happens in a forked child process: libx265 keeps state between encoder instances and
    has been seen to corrupt its heap when several small-frame encodes share one process; a child
    also gives every run a clean memory baseline, and a crash becomes an error, not an abort."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(_run_reference_here, name, crf, frames, fps, gop).result()
        except concurrent.futures.process.BrokenProcessPool:
            raise LfqError(f"{name} crashed at crf {crf} on {frames.shape[2]}x{frames.shape[1]} frames") from None


def _run_reference_here(name: str, crf: int, frames: np.ndarray, fps: Fraction, gop: int) -> tuple[int, np.ndarray, dict]:
    spec = REFERENCE_CODECS[name]
    padded = _pad_even(frames)  # yuv420p needs even sizes; cropped back before measuring
    buffer = io.BytesIO()
    options = {**spec["options"], "crf": str(crf), spec["params_key"]: spec["params"].format(gop=gop)}
    with PeakMemory() as enc_mem:
        started = time.perf_counter()
        with av.open(buffer, "w", format="matroska") as container:
            stream = container.add_stream(spec["codec"], rate=fps, options=options)
            stream.width, stream.height, stream.pix_fmt = padded.shape[2], padded.shape[1], "yuv420p"
            mux_frames(container, stream, padded)
        encode_s = time.perf_counter() - started
    data = buffer.getvalue()
    with PeakMemory() as dec_mem:
        started = time.perf_counter()
        with av.open(io.BytesIO(data), "r") as container:
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        decode_s = time.perf_counter() - started
    decoded = decoded[:, : frames.shape[1], : frames.shape[2]]
    timing = {"encode_s": encode_s, "decode_s": decode_s, "encode_peak_mib": enc_mem.peak_mib,
              "decode_peak_mib": dec_mem.peak_mib}  # fmt: skip
    return len(data), decoded, timing


def run_lfq(model: LoadedModel, quality: str, frames: np.ndarray, fps: Fraction, gop: int, device: str,
            workdir: Path, search_steps: int = 0) -> tuple[int, np.ndarray, dict]:  # fmt: skip
    from .api import decode_frames, encode_frames

    path = workdir / f"bench-{quality}-{device}.lfq"
    with PeakMemory() as enc_mem:
        started = time.perf_counter()
        encode_frames(iter(frames), path, width=frames.shape[2], height=frames.shape[1], fps=fps, model=model,
                      quality=quality, device=device, gop=gop, search_steps=search_steps, overwrite=True)  # fmt: skip
        encode_s = time.perf_counter() - started
    with PeakMemory() as dec_mem:
        started = time.perf_counter()
        decoded = np.stack(list(decode_frames(path, device=device, model=model)))
        decode_s = time.perf_counter() - started
    size = path.stat().st_size
    path.unlink()
    timing = {"encode_s": encode_s, "decode_s": decode_s, "encode_peak_mib": enc_mem.peak_mib,
              "decode_peak_mib": dec_mem.peak_mib}  # fmt: skip
    return size, decoded, timing


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
    """BD-rate (percent; negative = test needs fewer bits) of ``test`` against ``anchor`` on ``metric``."""
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

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = bjontegaard.bd_rate(rate_a, dist_a, rate_t, dist_t, method="pchip", require_matching_points=False)
        except ValueError as exc:  # a curve the interpolation refuses: no number rather than no bench
            return {"bd_rate_percent": None, "overlap": [float(low), float(high)], "note": f"not computed: {exc}"}
    return {"bd_rate_percent": float(value), "overlap": [float(low), float(high)], "note": note}


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
) -> dict:
    """Run the whole comparison; returns a JSON-serialisable record. ``search_steps``: lfqcodec's
    encoder-side bit search (``lfqcodec encode --search``), 0 = off. ``frames_png``: a folder where
    one side-by-side picture per clip is written (``CLIP.png``, :mod:`lfqcodec.pictures`)."""
    import tempfile

    from . import pictures, vmaf

    unknown = [c for c in codecs if c not in REFERENCE_CODECS]
    if unknown:
        raise LfqError(f"unknown codec(s) {', '.join(unknown)} (available: {', '.join(REFERENCE_CODECS)})")
    missing = [c for c in codecs if REFERENCE_CODECS[c]["codec"] not in av.codecs_available]
    if missing:
        raise LfqError(f"this FFmpeg build lacks {', '.join(REFERENCE_CODECS[c]['codec'] for c in missing)}")
    loaded = load_model(model)
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only (it prints its config per encode otherwise)
    av.logging.set_level(av.logging.ERROR)
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    torch.set_num_threads(os.cpu_count() or 1)
    vmaf_settings = vmaf.settings()  # also fails early, in one line, when the VMAF tool is missing
    points: list[RdPoint] = []
    shown: list[dict] = []
    say = progress or (lambda message: None)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for clip_path in clips:
            clip, fps = read_clip(clip_path, frames)
            name = clip_path.name
            picture = pictures.FramePicture(name, clip, pictures.choose_crop(clip, gop)) if frames_png else None

            def measured(codec: str, setting: str, device: str, size: int, decoded: np.ndarray, timing: dict) -> None:
                point, vmaf_per_frame = _point(name, codec, setting, device, clip, fps, size, decoded, timing)
                points.append(point)
                if picture is not None:
                    picture.add(point, decoded, clip, vmaf_per_frame)

            for device in devices:
                for quality in sorted(loaded.config.quality_bits, key=loaded.config.quality_bits.get):
                    say(f"{name}: lfqcodec {quality} on {device}")
                    measured("lfqcodec", quality, device, *run_lfq(loaded, quality, clip, fps, gop, device, Path(tmp),
                                                                   search_steps))  # fmt: skip
            for codec in codecs:
                for crf in REFERENCE_CODECS[codec]["crfs"]:
                    say(f"{name}: {codec} crf {crf}")
                    measured(codec, f"crf{crf}", "cpu", *run_reference(codec, crf, clip, fps, gop))
            if picture is not None:
                shown.append(picture.render(frames_png / f"{Path(name).stem}.png"))
    bd = {}
    for clip_name in dict.fromkeys(p.clip for p in points):
        ours = [p for p in points if p.clip == clip_name and p.codec == "lfqcodec" and p.device == "cpu"]
        anchor = [p for p in points if p.clip == clip_name and p.codec == "x265"]
        if anchor:
            bd[clip_name] = {metric: bd_rate(anchor, ours, metric) for metric in BD_METRICS}
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_cores": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "ffmpeg": {k: ".".join(map(str, v)) for k, v in av.library_versions.items()}, "pyav": av.__version__},  # fmt: skip
        "model": {"name": loaded.name, "sha256": loaded.sha256},
        "settings": {"frames": frames, "gop": gop, "lfqcodec_search_steps": search_steps, "codecs": {c: {k: v for k, v in REFERENCE_CODECS[c].items()} for c in codecs},
                     "reference_threads": "FFmpeg default (all cores)", "pix_fmt": "yuv420p"},  # fmt: skip
        "vmaf": vmaf_settings,
        "points": [asdict(p) for p in points],
        "bd_rate_vs_x265": bd,
        "pictures": shown,
    }


def format_table(record: dict) -> str:
    lines = [f"{'clip':22s} {'codec':9s} {'setting':8s} {'dev':4s} {'bpp':>7s} {'kbit/s':>8s} {'PSNR':>6s} "
             f"{'PSNR-Y':>6s} {'MS-SSIM':>7s} {'VMAF':>5s} {'enc fps':>8s} {'dec fps':>8s} {'enc MiB':>7s} {'dec MiB':>7s}"]  # fmt: skip
    fmt_mem = lambda v: f"{v:7.0f}" if v is not None else "      -"
    if record["settings"].get("lfqcodec_search_steps"):
        lines.insert(0, f"lfqcodec encoded with --search {record['settings']['lfqcodec_search_steps']}")
    for p in record["points"]:
        lines.append(
            f"{p['clip'][:22]:22s} {p['codec']:9s} {p['setting']:8s} {p['device']:4s} {p['bpp']:7.4f} {p['kbit_s']:8.1f} "
            f"{p['psnr_rgb']:6.2f} {p['psnr_y']:6.2f} {p['ms_ssim_y']:7.4f} {p['vmaf']:5.1f} {p['encode_fps']:8.2f} {p['decode_fps']:8.2f} "
            f"{fmt_mem(p['encode_peak_mib'])} {fmt_mem(p['decode_peak_mib'])}"
        )
    for clip, metrics in record["bd_rate_vs_x265"].items():
        parts = []
        for metric, result in metrics.items():
            value = result["bd_rate_percent"]
            if value is None:
                parts.append(f"{metric} n/a ({result['note']})")
            else:
                low, high = result["overlap"]
                parts.append(f"{metric} {value:+.1f}% (over {low:.3g}..{high:.3g} only)")
        lines.append(f"BD-rate of lfqcodec vs x265 on {clip}: " + "; ".join(parts))
    return "\n".join(lines)


def plot(record: dict, path: Path) -> None:
    """Bits per pixel against PSNR (RGB), MS-SSIM (luma) and VMAF, one row per clip, one line per codec."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = list(dict.fromkeys(p["clip"] for p in record["points"]))
    fig, axes = plt.subplots(len(clips), 3, figsize=(15, 4 * len(clips)), squeeze=False)
    for row, clip in enumerate(clips):
        for col, (metric, label) in enumerate((("psnr_rgb", "PSNR RGB (dB)"), ("ms_ssim_y", "MS-SSIM (luma)"), ("vmaf", "VMAF (v0.6.1)"))):
            ax = axes[row][col]
            for codec in dict.fromkeys(p["codec"] for p in record["points"]):
                pts = sorted((p["bpp"], p[metric]) for p in record["points"]
                             if p["clip"] == clip and p["codec"] == codec and p["device"] == "cpu")  # fmt: skip
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=codec)
            ax.set_xscale("log")
            ax.set_xlabel("bits per pixel (file size)")
            ax.set_ylabel(label)
            ax.set_title(clip)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    with atomic_open(path) as handle:
        fig.savefig(handle, dpi=100, format=Path(path).suffix[1:].lower())
    plt.close(fig)


PLOT_FORMATS = (".png", ".pdf", ".svg")


def check_outputs(json_path: Path | None, plot_path: Path | None) -> None:
    """Refuse, before any work, outputs that could not be written: a folder, a missing folder, a
    device, or a plot whose extension names no image format. Existing files are replaced."""
    for path in (json_path, plot_path):
        if path is not None:
            check_destination(path, overwrite=True)
    if plot_path is not None and plot_path.suffix.lower() not in PLOT_FORMATS:
        raise LfqError(f"--plot {plot_path}: use one of {', '.join(PLOT_FORMATS)}")
