"""What users import: encode / decode files, read headers and tokens.

>>> import lfqcodec
>>> lfqcodec.encode_file("in.mp4", "out.lfq", quality="medium")
>>> lfqcodec.decode_file("out.lfq", "back.mkv")
>>> tokens = lfqcodec.read_tokens("out.lfq", sub_bits=8)   # token indices for a language model

Work is streamed: frames are read, coded and written a few at a time (``window`` latent frames),
chunk after chunk, so memory depends on the frame size, not on the clip's length.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .base.atomic import atomic_output, check_destination
from .base.errors import LfqError
from .codec.chunks import (DEFAULT_GOP, DEFAULT_SCENECUT, DEFAULT_WINDOW, DEFAULT_ZSTD_LEVEL, Codec, _check_size,
                           _progress, encode_chunks)
from .codec.decoding import DecodeReport, decode_file, decode_frames, find_model_for
from .codec.fileinfo import Tokens, export_tokens, read_info, read_tokens
from .codec.search import SearchConfig
from .codec.scenecut import ChunkSplitter
from .entropy.store import find_for_tokenizer
from .format.container import LfqWriter, StreamHeader
from .io.pipeline import prefetched
from .model.checkpoint import MODELS_DIR, LoadedModel, load_model
from .model.device import select_device
from .presets import preset as presets

if TYPE_CHECKING:
    from .io.videoio import VideoSource

__all__ = ["Codec", "DecodeReport", "EncodeReport", "Tokens", "decode_file", "decode_frames", "encode_file",
           "encode_frames", "export_tokens", "find_model_for", "read_info", "read_tokens", "select_device"]  # fmt: skip
DEFAULT_PRESET = "medium"  # encoder preset recorded in the header (lfqcodec 0.1 has this one)


@dataclass(frozen=True)
class EncodeReport:
    path: Path
    header: StreamHeader
    file_bytes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)  # e.g. no entropy model for this tokenizer
    mode: str = ""  # how the network ran (lfqcodec.model.inference.InferenceMode.describe)

    @property
    def bits_per_pixel(self) -> float:
        return self.file_bytes * 8 / max(1, self.header.width * self.header.height * self.header.frame_count)

    @property
    def kbit_per_second(self) -> float:
        seconds = self.header.frame_count / self.header.fps
        return self.file_bytes * 8 / 1000 / float(seconds) if seconds else 0.0




def encode_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    quality: str = "medium",
    device: str = "auto",
    gop: int = DEFAULT_GOP,
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
    window: int = DEFAULT_WINDOW,
    scenecut: float = DEFAULT_SCENECUT,
    search_steps: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    max_frames: int | None = None,
    version: tuple[int, int] = (2, 0),
    preset: str = DEFAULT_PRESET,
    precision: str = "auto",
    pipeline: bool = True,
) -> EncodeReport:
    """Compress the first video stream of ``src`` into the ``.lfq`` file ``dst``. ``precision``:
    see :mod:`lfqcodec.model.inference`; ``pipeline`` reads frames in a background thread
    (:mod:`lfqcodec.io.pipeline`; same output)."""
    from .io.videoio import VideoSource  # PyAV: only where a video file is read

    started = time.time()
    dst = check_destination(dst, overwrite, (src,), suffix=".lfq")
    with VideoSource(src) as source, contextlib.closing(_read(source, pipeline)) as read:
        frames: Iterator[np.ndarray] = read
        total = source.info.frame_count_hint  # 0 when the container does not say
        if max_frames is not None:
            frames = (frame for _, frame in zip(range(max_frames), frames))
            total = min(total, max_frames) if total else max_frames  # what will be coded, at most
        report = encode_frames(
            frames, dst, width=source.info.width, height=source.info.height, fps=source.info.fps,
            time_base=source.info.time_base, metadata=source.info.metadata, model=model, quality=quality,
            device=device, gop=gop, zstd_level=zstd_level, window=window, scenecut=scenecut, search_steps=search_steps,
            overwrite=True, progress_total=total if progress else None, version=version,
            preset=preset, precision=precision,
        )  # fmt: skip
    seconds = time.time() - started
    return EncodeReport(report.path, report.header, report.file_bytes, seconds, report.warnings, report.mode)


def _read(source: VideoSource, pipeline: bool) -> Iterator[np.ndarray]:
    """``source``'s frames, read ahead in a background thread with ``pipeline``."""
    return prefetched(source.frames()) if pipeline else source.frames()


def encode_frames(
    frames: Iterable[np.ndarray],
    dst: str | os.PathLike,
    *,
    width: int,
    height: int,
    fps: Fraction,
    time_base: Fraction | None = None,
    metadata: dict[str, str] | None = None,
    model: str | os.PathLike | LoadedModel | None = None,
    quality: str = "medium",
    device: str = "auto",
    gop: int = DEFAULT_GOP,
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
    window: int = DEFAULT_WINDOW,
    scenecut: float = DEFAULT_SCENECUT,
    search_steps: int = 0,
    overwrite: bool = False,
    progress_total: int | None = None,
    version: tuple[int, int] = (2, 0),
    preset: str = DEFAULT_PRESET,
    precision: str = "auto",
) -> EncodeReport:
    """Compress RGB frames (``height x width x 3`` uint8 each) into the ``.lfq`` file ``dst``.

    A new chunk starts at each detected scene cut (``scenecut``: the mean absolute luma change, on
    0..255, that can mark one; 0 turns detection off, so chunks are exactly ``gop`` frames).
    ``search_steps`` > 0 searches the bits against the decoder (:mod:`lfqcodec.codec.search`): better
    pictures, same decoder, far slower encoding (each step is a decoder forward and backward pass
    over the chunk; measured in ``models/lfq-base.md``). ``preset`` (:mod:`lfqcodec.presets.preset`): slower
    presets fit a decoder update per run of chunks (format 2.0) and search the bits, each only where
    it pays for its bytes.
    ``progress_total`` (frames expected, 0 if unknown) shows a progress bar on stderr.
    ``version=(2, 0)`` codes the bits with the context model fitted for this tokenizer
    (``models/<name>.entropy``, ``lfqcodec train-entropy``); without one it writes 2.0 with zstd
    bit planes (as 1.x) and says so in the report's ``warnings``. ``version=(1, 1)`` writes the
    legacy format. ``preset`` is recorded in the header's metadata."""
    started = time.time()
    dst = check_destination(dst, overwrite, suffix=".lfq")
    if not 1 <= zstd_level <= 22:
        raise LfqError(f"zstd level {zstd_level} outside 1..22")
    chosen = presets.resolve(preset)
    window, zstd_level = chosen.window or window, chosen.zstd_level or zstd_level
    if chosen.fit is not None and version[0] != 2:
        raise LfqError(f"--preset {preset} stores a decoder update, which needs format 2.0")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    cfg = loaded.config
    if quality not in cfg.quality_bits:
        raise LfqError(f"unknown quality {quality!r} (this model has {', '.join(cfg.quality_bits)})")
    if gop < 1 or (gop - 1) % cfg.temporal_factor:
        raise LfqError(f"--gop must be 1 + {cfg.temporal_factor}k frames (e.g. 17, 33, 65), got {gop}")
    codec = Codec(loaded, select_device(device), window, precision)
    keep = cfg.quality_bits[quality]
    s = cfg.spatial_factor
    grid = (-(-height // s), -(-width // s))
    header = StreamHeader(
        model_id=loaded.model_id, width=width, height=height, frame_count=0, fps=Fraction(fps),
        time_base=Fraction(time_base or 1 / Fraction(fps)), bits=keep, model_bits=cfg.num_bits,
        temporal_factor=cfg.temporal_factor, spatial_factor=s, gop=gop, grid_height=grid[0], grid_width=grid[1],
        metadata={"model_name": loaded.name, "quality": quality, "encoder": f"lfqcodec {__version__}",
                  "preset": preset, **(metadata or {})},
    )  # fmt: skip
    warnings, entropy_model = [], None
    if version[0] == 2:
        entropy_model = find_for_tokenizer(loaded.model_id, MODELS_DIR)
        if entropy_model is None:
            warnings.append(f"no entropy model for tokenizer {loaded.name!r} ({loaded.model_id.hex()}) in {MODELS_DIR}: "
                            "bits coded with zstd as in format 1.x (larger files); run lfqcodec train-entropy")
    if scenecut < 0:
        raise LfqError(f"--scenecut must be >= 0, got {scenecut}")
    if search_steps < 0:
        raise LfqError(f"--search must be >= 0, got {search_steps}")
    slow = chosen.fit is not None or chosen.search_steps > 0
    if (search_steps or chosen.search_steps) and keep > cfg.sign_bits:
        raise LfqError(f"the bit search (--search, --preset {preset}) changes sign bits only; quality {quality!r} "
                       f"keeps {keep - cfg.sign_bits} residual bits: use a quality of at most {cfg.sign_bits} bits")
    if search_steps and slow:
        chosen = replace(chosen, search_steps=search_steps)
    if search_steps or chosen.search_steps:
        header.metadata["search_steps"] = str(search_steps or chosen.search_steps)
    header.metadata["precision"] = codec.encode_mode.precision  # bits may differ by it near zero (lfqcodec.model.inference)
    rate = presets.SEARCH_RATE if entropy_model is not None else 0.0  # rate-aware where the file is context-coded
    search = SearchConfig(steps=search_steps, rate_weight=rate, rate_model=entropy_model)
    show = progress_total is not None
    with atomic_output(dst) as tmp, open(tmp, "wb") as out, _progress(progress_total, "encode", show) as bar:
        writer = LfqWriter(out, header, zstd_level, version, entropy_model)
        if slow:
            runner = presets.RunEncoder(codec, grid, keep, chosen, zstd_level, entropy_model)
            presets.write_runs(runner, ChunkSplitter(_check_size(frames, width, height), scenecut), writer, gop, bar)
        else:
            for chunk in encode_chunks(codec, frames, width, height, gop, keep, scenecut, search):
                writer.write_chunk(chunk.bits[:keep], chunk.frames)
                if bar is not None:
                    bar.update(chunk.frames)
        if not writer.frames:
            raise LfqError("no frames could be read from the input")
        header = writer.close()
    return EncodeReport(dst, header, dst.stat().st_size, time.time() - started, warnings, codec.encode_mode.describe())
