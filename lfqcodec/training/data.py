"""Training data: real clips and photos decoded once into a uint8 array cache, sampled as crops.

``prepare_cache`` decodes every video (and photo) under the given folders with PyAV into
``.npy`` files (``T x H x W x 3`` uint8), so the two CPU cores spend training time on the model,
not on decoding. ``ClipSampler`` then draws, per sample:

* real video: a random clip, temporal stride 1 or 2, a random scale (the crop is taken at
  ``scale x size`` and area-averaged down), a random position, a random horizontal flip and
  random time reversal;
* a synthetic camera move over a real photo: a pan with a slow zoom, resampled per frame;
* still images: random crops of photos (and of video frames) as one-frame clips, so the
  first-frame path is trained jointly, as in MAGVIT-v2.

Batches are float tensors ``N x 3 x T x H x W`` in ``[-1, 1]``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..base.atomic import atomic_open
from ..base.errors import LfqError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".y4m"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MAX_IMAGE_SIDE = 2048  # photos are downscaled to this before caching (keeps RAM bounded)


def prepare_cache(sources: list[Path], cache_dir: Path, exclude: set[str] = frozenset()) -> list[Path]:
    """Decode videos and images under ``sources`` into ``cache_dir/*.npy``; returns the cached paths.
    ``exclude``: file names or stems to leave out.

    Safe to call from several processes at once (the ranks of a DDP run): one holds the cache
    folder's lock and decodes, the others wait for it and then find every file in place. Each
    file is written atomically, so a cache file is complete or absent, never half-written."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LfqError(f"cannot create the data cache {cache_dir}: {exc.strerror or exc}") from None
    with folder_lock(cache_dir):
        return _fill_cache(sources, cache_dir, exclude)


def _fill_cache(sources: list[Path], cache_dir: Path, exclude: set[str]) -> list[Path]:
    from ..io.videoio import read_video_frames  # PyAV: only where material is decoded

    cached = []
    files = sorted(p for src in sources for p in (src.rglob("*") if src.is_dir() else [src]) if p.is_file())
    for path in files:
        suffix = path.suffix.lower()
        if suffix not in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
            continue
        if path.name in exclude or path.stem in exclude:
            log.info("left out of training: %s (excluded or held out)", path)
            continue
        kind = "video" if suffix in VIDEO_SUFFIXES else "image"
        target = cache_dir / f"{kind}-{path.stem}.npy"
        if not target.exists():
            frames = list(read_video_frames(path))
            if not frames:
                raise LfqError(f"{path}: no video frames")
            frames = np.stack(frames)
            if kind == "image":
                frames = _limit_side(frames[:1], MAX_IMAGE_SIDE)
            with atomic_open(target) as handle:
                np.save(handle, frames)
            log.info("cached %s: %s", path.name, frames.shape)
        cached.append(target)
    return cached


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder/.lock`` (``flock``) for the block; other
    processes asking for it wait. Where the OS has no ``fcntl`` (Windows) there is no lock: the
    files are still written atomically, only the work may be done twice."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(folder / ".lock", flags, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process preparing %s", folder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _limit_side(frames: np.ndarray, max_side: int) -> np.ndarray:
    _, h, w, _ = frames.shape
    factor = max(h, w) / max_side
    if factor <= 1:
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(round(h / factor), round(w / factor)), mode="area")
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def to_model_range(frames_uint8: torch.Tensor) -> torch.Tensor:
    """``... x H x W x 3`` uint8 -> ``... x 3 x H x W`` float in [-1, 1] (channel moved before H)."""
    return frames_uint8.movedim(-1, -3).float() / 127.5 - 1


@dataclass
class SamplerConfig:
    frames: int = 33  # clip length for video batches (1 + 4k); as long as the codec's chunks
    size: int = 64  # crop side in pixels
    image_size: int = 128  # crop side for still-image batches
    photo_move_fraction: float = 0.25  # share of video samples that are camera moves over photos
    max_scale: int = 4  # crops are taken at up to this multiple of `size`, then area-downscaled
    max_stride: int = 2  # temporal stride of video crops: 1 half the time, else uniform in 2..max_stride
    pan_speed: float = 3.0  # fastest synthetic camera move, in output pixels per frame


class ClipSampler:
    def __init__(self, cached: list[Path], cfg: SamplerConfig, seed: int = 0):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.videos = [np.load(p, mmap_mode="r") for p in cached if p.name.startswith("video-")]
        self.images = [np.load(p, mmap_mode="r")[0] for p in cached if p.name.startswith("image-")]
        if not self.videos or not self.images:
            raise LfqError(
                f"training needs at least one video and one image in its data (found {len(self.videos)} videos, "
                f"{len(self.images)} images; videos: {', '.join(sorted(VIDEO_SUFFIXES))}; images: "
                f"{', '.join(sorted(IMAGE_SUFFIXES))})"
            )

    def video_batch(self, batch: int) -> torch.Tensor:
        samples = [
            self._photo_move() if self.rng.random() < self.cfg.photo_move_fraction else self._video_crop()
            for _ in range(batch)
        ]
        return torch.stack(samples)

    def image_batch(self, batch: int) -> torch.Tensor:
        samples = []
        for _ in range(batch):
            if self.rng.random() < 0.7:
                src = self.images[self.rng.integers(len(self.images))]
            else:
                clip = self.videos[self.rng.integers(len(self.videos))]
                src = clip[self.rng.integers(len(clip))]
            samples.append(self._crop(src[None], self.cfg.image_size))
        return torch.stack(samples)

    def _crop(self, frames: np.ndarray, size: int) -> torch.Tensor:
        """Random-scale random-position crop of ``T x H x W x 3`` -> ``3 x T x size x size``."""
        _, h, w, _ = frames.shape
        max_scale = max(1, min(self.cfg.max_scale, h // size, w // size))
        scale = int(self.rng.integers(1, max_scale + 1))
        side = size * scale
        y = int(self.rng.integers(0, h - side + 1))
        x = int(self.rng.integers(0, w - side + 1))
        clip = torch.from_numpy(np.array(frames[:, y : y + side, x : x + side]))
        clip = to_model_range(clip)  # T x 3 x side x side
        if scale > 1:
            clip = F.avg_pool2d(clip, scale)
        if self.rng.random() < 0.5:
            clip = clip.flip(-1)
        return clip.transpose(0, 1).contiguous()

    def _video_crop(self) -> torch.Tensor:
        n = self.cfg.frames
        for _ in range(100):
            clip = self.videos[self.rng.integers(len(self.videos))]
            stride = 1
            if self.cfg.max_stride > 1 and self.rng.random() < 0.5:
                stride = int(self.rng.integers(2, self.cfg.max_stride + 1))
            span = (n - 1) * stride + 1
            if len(clip) >= span and min(clip.shape[1:3]) >= self.cfg.size:
                break
        else:
            raise LfqError(f"no training video is long and large enough for {n}-frame crops of {self.cfg.size} pixels")
        start = int(self.rng.integers(0, len(clip) - span + 1))
        frames = clip[start : start + span : stride]
        if self.rng.random() < 0.25:
            frames = frames[::-1]
        return self._crop(frames, self.cfg.size)

    def _photo_move(self) -> torch.Tensor:
        """A pan with a slow zoom over a photo, resampled per frame with antialiasing."""
        n, size = self.cfg.frames, self.cfg.size
        photo = self.images[self.rng.integers(len(self.images))]
        h, w, _ = photo.shape
        side0 = float(self.rng.uniform(size, max(size, min(h, w) / 3)))
        zoom = float(self.rng.uniform(-0.02, 0.02))  # relative change of the window per frame
        speed = side0 / size * float(self.rng.uniform(0, self.cfg.pan_speed))  # source pixels per frame at output scale
        angle = float(self.rng.uniform(0, 2 * np.pi))
        sides = side0 * (1 + zoom) ** np.arange(n)
        margin = sides.max() / 2 + speed * n + 1
        if min(h, w) < 2 * margin:
            return self._video_crop()
        cy = float(self.rng.uniform(margin, h - margin))
        cx = float(self.rng.uniform(margin, w - margin))
        frames = []
        for t in range(n):
            yc, xc = cy + np.sin(angle) * speed * t, cx + np.cos(angle) * speed * t
            half = sides[t] / 2
            y0, x0 = round(yc - half), round(xc - half)
            s = max(size, round(sides[t]))
            patch = torch.from_numpy(np.array(photo[y0 : y0 + s, x0 : x0 + s])).permute(2, 0, 1)
            patch = F.interpolate(patch[None].float(), size=(size, size), mode="bilinear", antialias=True)[0]
            frames.append(patch)
        clip = torch.stack(frames, dim=1) / 127.5 - 1  # 3 x T x size x size
        return clip.clamp(-1, 1)


class BatchStream(torch.utils.data.IterableDataset):
    """Training batches in step order: ``(image_step, N x 3 x T x H x W batch)`` for steps ``start``,
    ``start + 1``, ... (every ``image_every``-th step a still-image batch).

    Iterated directly it runs in the training process, as a plain :class:`ClipSampler`; inside a
    ``DataLoader(stream, batch_size=None, num_workers=W)`` worker ``i`` makes the batches of steps
    ``start + i``, ``start + i + W``, ..., which the loader returns in step order, so a GPU is not left
    waiting on crops and resampling done on one CPU core."""

    def __init__(self, cached: list[Path], cfg: SamplerConfig, batch: int, image_batch: int, image_every: int,
                 seed: int, start: int = 0):  # fmt: skip
        self.cached, self.cfg, self.seed, self.start = cached, cfg, seed, start
        self.batch, self.image_batch, self.image_every = batch, image_batch, image_every
        ClipSampler(cached, cfg)  # unusable material is refused here, in one line, not inside a loader worker

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if info:
            torch.set_num_threads(1)
        sampler = ClipSampler(self.cached, self.cfg, seed=self.seed + 104729 * worker)
        step = self.start + worker
        while True:
            image_step = self.image_every > 0 and step % self.image_every == self.image_every - 1
            yield image_step, sampler.image_batch(self.image_batch) if image_step else sampler.video_batch(self.batch)
            step += workers
