"""Pictures beside the numbers: ``lfqcodec bench --frames-png DIR``.

For each clip, one frame is chosen from the source alone, before any codec runs: the frame with the
most motion (mean absolute luma change from the frame before) that does not start a chunk (a chunk's
first frame is coded as an image by every codec, so it shows the least of a video codec; frames at
least 5 into their chunk are preferred, predicted from a settled past). A crop of
that frame, placed where it changes most, is shown for the source, each lfqcodec quality and the
x265 setting closest to it in bits per pixel, side by side, one row per quality, labelled with the
clip's bits per pixel, PSNR (RGB) and VMAF and the same for the shown frame. Labels use matplotlib's
bundled DejaVu Sans: no font is fetched.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..base.atomic import atomic_output
from ..base.metrics import BT601_LUMA
from ..codec.scenecut import DEFAULT_THRESHOLD, SceneCutDetector

CROP_SIDE = 256  # largest crop side, in source pixels
PANEL_MIN = 256  # crops smaller than this are enlarged by an integer factor (nearest neighbour)


@dataclass(frozen=True)
class Crop:
    frame: int  # index of the shown frame in the clip
    top: int
    left: int
    height: int
    width: int
    scale: int  # integer enlargement for display
    chunk_starts: list[int]  # frames that start a chunk (excluded from the choice)


def chunk_starts(frames: np.ndarray, gop: int, scenecut: float = DEFAULT_THRESHOLD) -> list[int]:
    """Frames of ``T x H x W x 3`` uint8 ``frames`` where lfqcodec's encoder starts a chunk: every
    ``gop`` frames, and at each scene cut it detects (then counting ``gop`` again from the cut)."""
    detector = SceneCutDetector(scenecut)
    starts, since = [], 0
    for t, frame in enumerate(frames):
        cut = detector.is_cut(frame)
        if t == 0 or cut or since == gop:
            starts.append(t)
            since = 0
        since += 1
    return starts


def _luma(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ np.array(BT601_LUMA, dtype=np.float32)


def _change(frames: np.ndarray, t: int) -> np.ndarray:
    """``H x W`` absolute luma change of frame ``t`` from frame ``t - 1`` (zeros for the first frame)."""
    if t == 0:
        return np.zeros(frames.shape[1:3], np.float32)
    return np.abs(_luma(frames[t]) - _luma(frames[t - 1]))


def choose_crop(frames: np.ndarray, gop: int, scenecut: float = DEFAULT_THRESHOLD, side: int = CROP_SIDE) -> Crop:
    """The frame with most motion that starts no chunk (at least 5 frames into its chunk when the
    clip allows), and the ``side`` x ``side`` window (or the
    whole frame, if smaller) where it changed most."""
    t_count, height, width = frames.shape[:3]
    starts = chunk_starts(frames, gop, scenecut)
    # prefer frames past the chunk's first two latent frames (its first frame, then frames 1-4):
    # predicted from a settled past, as most frames of a video are
    into_chunk = [t - max(s for s in starts if s <= t) for t in range(t_count)]
    candidates = [t for t, k in enumerate(into_chunk) if k > 4] or [t for t, k in enumerate(into_chunk) if k] or [0]
    frame = max(candidates, key=lambda t: float(_change(frames, t).mean()))
    crop_h, crop_w = min(side, height), min(side, width)
    # window sums of the change map from its integral image, on an 8-pixel grid
    integral = np.pad(_change(frames, frame).astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    best, top, left = -1.0, 0, 0
    for y in range(0, height - crop_h + 1, 8):
        for x in range(0, width - crop_w + 1, 8):
            total = integral[y + crop_h, x + crop_w] - integral[y, x + crop_w] - integral[y + crop_h, x] + integral[y, x]
            if total > best:
                best, top, left = float(total), y, x
    scale = min(4, math.ceil(PANEL_MIN / max(crop_h, crop_w)))
    return Crop(frame, top, left, crop_h, crop_w, scale, starts)


@dataclass
class Panel:
    codec: str
    setting: str
    bpp: float
    psnr_rgb: float  # over the clip
    vmaf: float  # over the clip
    frame_psnr: float  # of the shown frame
    frame_vmaf: float
    image: np.ndarray  # the crop, h x w x 3 uint8


class FramePicture:
    """Collects the crop of every codec run on one clip; :meth:`render` writes the PNG."""

    def __init__(self, clip: str, source: np.ndarray, crop: Crop):
        self.clip, self.crop, self.frames = clip, crop, len(source)
        self.source = self._cut(source)
        self.panels: list[Panel] = []

    def _cut(self, frames: np.ndarray) -> np.ndarray:
        c = self.crop
        return np.ascontiguousarray(frames[c.frame, c.top : c.top + c.height, c.left : c.left + c.width])

    def add(self, point, decoded: np.ndarray, source: np.ndarray, vmaf_per_frame: list[float]) -> None:
        """Keep the crop of ``decoded`` (``T x H x W x 3`` uint8) for ``point`` (a bench ``RdPoint``)."""
        if point.device != "cpu" or point.codec not in ("lfqcodec", "x265"):
            return
        t = self.crop.frame
        mse = float(np.mean((decoded[t].astype(np.float64) - source[t].astype(np.float64)) ** 2))
        frame_psnr = 10 * math.log10(255**2 / mse) if mse > 0 else math.inf
        self.panels.append(Panel(point.codec, point.setting, point.bpp, point.psnr_rgb, point.vmaf, frame_psnr,
                                 vmaf_per_frame[t], self._cut(decoded)))  # fmt: skip

    def rows(self) -> list[tuple[Panel, Panel | None]]:
        """(lfqcodec quality, x265 setting nearest to it in bits per pixel) per quality, lowest rate first."""
        ours = sorted((p for p in self.panels if p.codec == "lfqcodec"), key=lambda p: p.bpp)
        x265 = [p for p in self.panels if p.codec == "x265"]
        nearest = lambda p: min(x265, key=lambda q: abs(math.log(q.bpp / p.bpp))) if x265 else None  # noqa: E731
        return [(p, nearest(p)) for p in ours]

    def render(self, path: Path) -> dict:
        """Write the picture to ``path`` (PNG, atomically); returns what it shows, for the JSON record."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        c, rows = self.crop, self.rows()
        pw, ph = c.width * c.scale, c.height * c.scale  # panel size in output pixels (dpi 100: 1 px = 1/100 in)
        gap, label_h, title_h = 6, 46, 34
        fig_w, fig_h = 3 * pw + 4 * gap, title_h + len(rows) * (label_h + ph + gap)
        fig = plt.figure(figsize=(fig_w / 100, fig_h / 100), dpi=100)
        fig.text(gap / fig_w, 1 - 6 / fig_h, f"{self.clip}: frame {c.frame} of {self.frames} (most motion, not at a chunk "
                 f"start), crop {c.width}x{c.height} at x={c.left}, y={c.top}" + (f", shown {c.scale}x" if c.scale > 1 else ""),
                 fontsize=9, va="top", weight="bold")  # fmt: skip
        for r, (ours, theirs) in enumerate(rows):
            top = title_h + r * (label_h + ph + gap)
            for col, panel in enumerate((None, ours, theirs)):
                x = gap + col * (pw + gap)
                ax = fig.add_axes((x / fig_w, 1 - (top + label_h + ph) / fig_h, pw / fig_w, ph / fig_h))
                ax.set_axis_off()
                if col == 0:
                    image, label = self.source, "source"
                elif panel is None:
                    fig.text(x / fig_w, 1 - (top + 4) / fig_h, "x265: not run", fontsize=8, va="top")
                    continue
                else:
                    image, label = panel.image, _label(panel, c.frame)
                ax.imshow(np.repeat(np.repeat(image, c.scale, 0), c.scale, 1), interpolation="nearest")
                fig.text(x / fig_w, 1 - (top + 4) / fig_h, label, fontsize=8, va="top", linespacing=1.3)
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
        return {"clip": self.clip, "png": path.name, "crop": asdict(c),
                "rows": [{"lfqcodec": ours.setting, "x265": theirs.setting if theirs else None} for ours, theirs in rows]}


def _label(panel: Panel, frame: int) -> str:
    name = f"lfqcodec {panel.setting}" if panel.codec == "lfqcodec" else f"x265 {panel.setting.replace('crf', 'CRF ')}"
    return (f"{name}: {panel.bpp:.4f} bpp\nclip: {panel.psnr_rgb:.2f} dB, VMAF {panel.vmaf:.1f}\n"
            f"frame {frame}: {panel.frame_psnr:.2f} dB, VMAF {panel.frame_vmaf:.1f}")
