"""A compact pack of training material, for training on a machine without the codec's libraries.

A GPU machine lent for a few minutes receives the repository and at most 64 MiB in all, and has no
PyAV; it has OpenCV and Pillow. A pack keeps the material compressed as H.264 and JPEG, read back there
with OpenCV (PyAV, then Pillow, where OpenCV is absent), so ~15 MiB carry thousands of real frames.

Layout of a pack folder (``manifest.json`` lists every file with its SHA-256)::

    manifest.json       {"version": 1, "videos": [...], "photos": [...], "validation": [...], ...}
    videos/NAME.mp4     H.264 yuv420p, CRF ``crf``, short side at most ``video_side``, at most ``max_frames``
    photos/NAME.jpg     JPEG, long side at most ``photo_side``
    validation/NAME.mp4 the first ``val_frames`` frames of each validation clip, centre crop, H.264 CRF 10

``build_pack`` chooses the largest CRF step that fits ``budget_bytes`` (the lowest CRF first).
``read_pack`` decodes a pack into the ``.npy`` cache that :class:`lfqcodec.training.data.ClipSampler` reads
and the validation clips that :func:`lfqcodec.training.validation.validate` takes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..base.atomic import atomic_output
from ..base.errors import LfqError

log = logging.getLogger(__name__)

PACK_VERSION = 1
CRF_STEPS = (18, 22, 26, 30, 34)


@dataclass(frozen=True)
class PackConfig:
    video_side: int = 288  # short side of packed clips (training crops are 96-128 px, taken at up to 4x scale)
    max_frames: int = 900  # frames kept per clip (long clips: the first ones)
    photo_side: int = 1280  # long side of packed photos
    photo_quality: int = 88  # JPEG quality (Pillow's 1-95) of packed photos
    val_frames: int = 33
    val_side: int = 256  # validation clips: centre crop of at most this side
    budget_bytes: int = 14 << 20


def _resize(frames: np.ndarray, short_side: int | None = None, long_side: int | None = None) -> np.ndarray:
    """``T x H x W x 3`` uint8, area-downscaled so the short (or long) side is at most the given one; sides even."""
    _, h, w, _ = frames.shape
    factor = max(1.0, min(h, w) / short_side if short_side else max(h, w) / long_side)
    size = (max(2, round(h / factor) // 2 * 2), max(2, round(w / factor) // 2 * 2))
    if size == (h, w):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="area")
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def _centre_crop(frames: np.ndarray, side: int) -> np.ndarray:
    _, h, w, _ = frames.shape
    ch, cw = (min(side, s) // 16 * 16 for s in (h, w))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return frames[:, y0 : y0 + ch, x0 : x0 + cw]


def _write_h264(path: Path, frames: np.ndarray, crf: int) -> None:
    import av

    with atomic_output(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def _write_jpeg(path: Path, image: np.ndarray, quality: int) -> None:
    try:
        from PIL import Image
    except ImportError:
        raise LfqError("packing photos needs Pillow (pip install pillow, or the bench extra)") from None
    with atomic_output(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="JPEG", quality=quality)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_source(path: Path, max_frames: int) -> np.ndarray:
    from ..io.videoio import read_video_frames

    frames = []
    for frame in read_video_frames(path):
        frames.append(frame)
        if len(frames) == max_frames:
            break
    if not frames:
        raise LfqError(f"{path}: no frames")
    return np.stack(frames)


def build_pack(
    videos: Iterable[Path], photos: Iterable[Path], validation: Iterable[Path], out_dir: Path, cfg: PackConfig = PackConfig()
) -> dict:
    """Write a pack of ``videos``, ``photos`` and ``validation`` clips to ``out_dir`` (replaced) within
    ``cfg.budget_bytes``; returns the manifest. Raises :class:`LfqError` when even the largest CRF misses."""
    videos, photos, validation = list(videos), list(photos), list(validation)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for sub in ("videos", "photos", "validation"):
        (out_dir / sub).mkdir(parents=True)
    manifest: dict = {"version": PACK_VERSION, "config": cfg.__dict__, "videos": [], "photos": [], "validation": []}
    fixed = 0
    for path in validation:
        frames = _centre_crop(_read_source(path, cfg.val_frames), cfg.val_side)
        target = out_dir / "validation" / f"{path.stem}.mp4"
        _write_h264(target, frames, crf=10)
        manifest["validation"].append({"file": f"validation/{target.name}", "source": path.name, "frames": len(frames)})
        fixed += target.stat().st_size
    for path in photos:
        image = _resize(_read_source(path, 1), long_side=cfg.photo_side)[0]
        target = out_dir / "photos" / f"{path.stem}.jpg"
        _write_jpeg(target, image, cfg.photo_quality)
        manifest["photos"].append({"file": f"photos/{target.name}", "source": path.name})
        fixed += target.stat().st_size
    sources = [(path, _resize(_read_source(path, cfg.max_frames), short_side=cfg.video_side)) for path in videos]
    for crf in CRF_STEPS:
        total = fixed
        for path, frames in sources:
            target = out_dir / "videos" / f"{path.stem}.mp4"
            _write_h264(target, frames, crf)
            total += target.stat().st_size
        log.info("pack at CRF %d: %.1f MiB (budget %.1f)", crf, total / 2**20, cfg.budget_bytes / 2**20)
        if total <= cfg.budget_bytes:
            break
    else:
        raise LfqError(f"the pack needs {total / 2**20:.1f} MiB even at CRF {CRF_STEPS[-1]}; budget {cfg.budget_bytes / 2**20:.1f}")
    manifest["crf"] = crf
    for path, frames in sources:
        manifest["videos"].append({"file": f"videos/{path.stem}.mp4", "source": path.name, "frames": len(frames)})
    for entry in manifest["videos"] + manifest["photos"] + manifest["validation"]:
        entry["sha256"] = _sha256(out_dir / entry["file"])
    manifest["bytes"] = total
    with atomic_output(out_dir / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return manifest


def decode_video(path: Path) -> np.ndarray:
    """``T x H x W x 3`` uint8 RGB frames of a packed clip: OpenCV where present, else PyAV."""
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None:
        capture = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame[..., ::-1])
        capture.release()
        if frames:
            return np.ascontiguousarray(np.stack(frames))
    from ..io.videoio import read_video_frames

    return np.stack(list(read_video_frames(path)))


def decode_photo(path: Path) -> np.ndarray:
    """``H x W x 3`` uint8 RGB of a packed photo: OpenCV, Pillow or PyAV, whichever is present."""
    try:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is not None:
            return np.ascontiguousarray(image[..., ::-1])
    except ImportError:
        pass
    try:
        from PIL import Image

        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except ImportError:
        from ..io.videoio import read_video_frames

        return next(iter(read_video_frames(path)))


def read_pack(pack_dir: Path, cache_dir: Path) -> tuple[list[Path], list[tuple[str, torch.Tensor]]]:
    """Check a pack's files against its manifest and decode it: ``(cache .npy paths, validation clips)``.

    Validation clips are ``(name, T x H x W x 3 uint8 tensor)``, as :func:`lfqcodec.training.validation.load_validation`
    gives them. A file that is missing, altered or unreadable is an :class:`LfqError` naming it."""
    manifest_path = pack_dir / "manifest.json"
    if not manifest_path.is_file():
        raise LfqError(f"{pack_dir}: no manifest.json (make a pack with scripts/pack_training_data.py)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("version") != PACK_VERSION:
        raise LfqError(f"{pack_dir}: pack version {manifest.get('version')}, this code reads {PACK_VERSION}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    for entry in manifest["videos"] + manifest["photos"] + manifest["validation"]:
        path = pack_dir / entry["file"]
        if not path.is_file() or _sha256(path) != entry["sha256"]:
            raise LfqError(f"{path}: missing or altered (its SHA-256 differs from the manifest)")
    cached = []
    for kind, entries, read in (("video", manifest["videos"], decode_video), ("image", manifest["photos"], decode_photo)):
        for entry in entries:
            frames = read(pack_dir / entry["file"])
            frames = frames if kind == "video" else frames[None]
            if kind == "video" and len(frames) < 9:
                log.warning("%s: %d frames decoded, skipped", entry["file"], len(frames))
                continue
            target = cache_dir / f"{kind}-{Path(entry['file']).stem}.npy"
            np.save(target, frames)
            cached.append(target)
    validation = []
    for entry in manifest["validation"]:
        frames = decode_video(pack_dir / entry["file"])
        validation.append((Path(entry["file"]).stem, torch.from_numpy(frames)))
    if not any(p.name.startswith("video-") for p in cached):
        raise LfqError(f"{pack_dir}: no packed clip could be decoded (is OpenCV or PyAV installed?)")
    return cached, validation
