"""Token bits of whole clips, for fitting and measuring the entropy model (``train-entropy``,
``benchmarks/entropy_bench.py``).

A clip is encoded once with the model's full bits (every quality's tokens are a prefix of them) and
cached as ``<cache>/<model id>/<clip name>-<frames>f.npz``: one bool array ``c{i}`` of
``B x T' x gh x gw`` per chunk and ``frames`` (frames per chunk). The cache is keyed by the model's
id, so a new tokenizer never reuses another's tokens.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.atomic import atomic_output
from ..model.checkpoint import LoadedModel
from ..codec.scenecut import DEFAULT_THRESHOLD, ChunkSplitter
from ..io.videoio import VideoSource

DEFAULT_CACHE = Path.home() / ".cache/lfqcodec/tokens"


@dataclass(frozen=True)
class ClipTokens:
    name: str
    chunks: list[np.ndarray]  # bool B x T' x gh x gw per chunk
    frames: list[int]  # frames per chunk


def _cache_path(cache: Path, model: LoadedModel, src: Path, max_frames: int, gop: int) -> Path:
    tag = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:8]
    return cache / model.model_id.hex() / f"{src.stem}-{tag}-{max_frames}f-g{gop}.npz"


def clip_tokens(
    src: str | os.PathLike,
    model: LoadedModel,
    max_frames: int = 65,
    gop: int = 33,
    max_pixels: int = 1280 * 720,
    cache: Path | None = DEFAULT_CACHE,
    device: str = "cpu",
) -> ClipTokens | None:
    """All bits of the first ``max_frames`` frames of ``src`` (default scene-cut detection, chunks of
    ``gop``); ``None`` for a source larger than ``max_pixels`` per frame (skipped, not scaled)."""
    from ..codec.chunks import Codec
    from ..model.device import select_device

    src = Path(src)
    path = _cache_path(cache, model, src, max_frames, gop) if cache else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            count = int(data["count"])
            return ClipTokens(src.stem, [data[f"c{i}"] for i in range(count)], list(data["frames"]))
    with VideoSource(src) as source:
        width, height = source.info.width, source.info.height
        if width * height > max_pixels:
            return None
        s = model.config.spatial_factor
        grid = (-(-height // s), -(-width // s))
        codec = Codec(model, select_device(device))
        frames = (frame for _, frame in zip(range(max_frames), source.frames()))
        splitter = ChunkSplitter(frames, DEFAULT_THRESHOLD)
        chunks, counts = [], []
        while True:
            part = _nonempty(splitter.chunk())
            if part is None:
                break
            encoded = codec.encode_chunk(part, gop, grid)
            chunks.append(encoded.bits)
            counts.append(encoded.frames)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp, open(tmp, "wb") as out:
            np.savez_compressed(out, count=len(chunks), frames=np.array(counts), **{f"c{i}": c for i, c in enumerate(chunks)})
    return ClipTokens(src.stem, chunks, counts)


def _nonempty(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray] | None:
    import itertools

    first = next(frames, None)
    return None if first is None else itertools.chain([first], frames)
