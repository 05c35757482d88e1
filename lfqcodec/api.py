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
import itertools
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from . import preset as presets
from .adapt import UpdateState
from .atomic import atomic_output, check_destination
from .checkpoint import MODELS_DIR, LoadedModel, load_model
from .container import LfqWriter, StreamHeader
from .decoding import DecodeReport, decode_file, decode_frames, find_model_for
from .device import select_device
from .entropy_store import find_for_tokenizer
from .errors import LfqError
from .fileinfo import Tokens, export_tokens, read_info, read_tokens
from .int8 import find_calibration
from .inference import choose_mode, decode_bits, encode_latents, prepare_tokenizer
from .layers import streaming
from .tiling import DEFAULT_MEMORY_BUDGET, TiledDecoding, TilePlan, plan_tiles, probe_decoder, to_uint8
from .pipeline import prefetched
from .scenecut import DEFAULT_THRESHOLD as DEFAULT_SCENECUT
from .scenecut import ChunkSplitter
from .search import SearchConfig, search_bits

if TYPE_CHECKING:
    from .videoio import VideoSource

__all__ = ["Codec", "DecodeReport", "EncodeReport", "Tokens", "decode_file", "decode_frames", "encode_file",
           "encode_frames", "export_tokens", "find_model_for", "read_info", "read_tokens", "select_device"]  # fmt: skip
DEFAULT_PRESET = "medium"  # encoder preset recorded in the header (lfqcodec 0.1 has this one)

DEFAULT_GOP = 33  # frames per independently decodable chunk (1 + 4k)
DEFAULT_ZSTD_LEVEL = 19
DEFAULT_WINDOW = 2  # latent frames coded per step (memory vs. speed)


def _to_model(frames: list[np.ndarray], grid: tuple[int, int], factor: int, device: torch.device) -> torch.Tensor:
    """RGB uint8 frames (``H x W x 3``; or torch ``3 x H x W`` in [-1, 1]) -> ``1 x 3 x T x H' x W'``
    in [-1, 1], edge-padded to the latent grid."""
    if isinstance(frames[0], torch.Tensor):
        video = torch.stack(frames, 1)[None].to(device, torch.float32)
    else:
        video = torch.from_numpy(np.stack(frames)).to(device).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    pad_h, pad_w = grid[0] * factor - video.shape[-2], grid[1] * factor - video.shape[-1]
    if pad_h or pad_w:
        video = F.pad(video.flatten(1, 2), (0, pad_w, 0, pad_h), mode="replicate").view(
            1, 3, len(frames), grid[0] * factor, grid[1] * factor
        )
    return video


def _to_frames(video: torch.Tensor, height: int, width: int) -> np.ndarray:
    """``1 x 3 x T x H' x W'`` in [-1, 1] -> ``T x height x width x 3`` uint8 (cropped)."""
    return to_uint8(video[0, :, :, :height, :width]).permute(1, 2, 3, 0).cpu().numpy()


class EncodedChunk(NamedTuple):
    bits: np.ndarray  # B x T' x gh x gw bool
    frames: int  # frames coded (0: the input had none left)
    last_error: torch.Tensor | None = None  # decoded - source of the last frame (searched chunks only)


class Codec:
    """A loaded model on a device, with the chunk-level encode and decode steps."""

    def __init__(self, model: LoadedModel, device: torch.device, window: int = DEFAULT_WINDOW, precision: str = "auto",
                 memory_budget: int = DEFAULT_MEMORY_BUDGET):  # fmt: skip
        self.model = model
        self.memory_budget = memory_budget  # bytes for the decoder's tensors (lfqcodec.tiling); 0 = no tiling
        self._probe: tuple[int, int] | None = None  # (halo, state bytes per latent) of the decoder
        self.device = device
        self.window = max(1, window)
        folders = (MODELS_DIR, model.path.parent if model.path else None)
        int8_ranges = find_calibration(model.model_id, *folders) if device.type == "cpu" else None
        self.mode = choose_mode(precision, device, int8_ranges is not None)  # precision and layout (lfqcodec.inference)
        self.tokenizer = prepare_tokenizer(model.tokenizer.to(device), self.mode, int8_ranges)
        self.cfg = model.config
        self.dtype = self.mode.dtype
        self._updates: UpdateState | None = None  # the decoder update in use (decoding)

    def encode_chunk(
        self,
        frames: Iterator[np.ndarray],
        gop: int,
        grid: tuple[int, int],
        keep_bits: int | None = None,
        search: SearchConfig | None = None,
        previous_error: torch.Tensor | None = None,
    ) -> EncodedChunk:
        """Encode up to ``gop`` frames from ``frames``.

        The first frame is coded alone; later frames go ``temporal_factor * window`` at a time,
        the last group padded by repeating its last frame. With ``search.steps > 0`` the first
        ``keep_bits`` bits are then searched against the decoder (:mod:`lfqcodec.search`), given
        ``previous_error`` (the last chunk's ``last_error``, when this chunk continues its scene)."""
        f, s = self.cfg.temporal_factor, self.cfg.spatial_factor
        keep_bits = keep_bits or self.cfg.num_bits
        first = next(frames, None)
        if first is None:
            return EncodedChunk(np.zeros((self.cfg.num_bits, 0, *grid), dtype=bool), 0)
        searching = search is not None and search.steps > 0
        inputs, latents, count = [], [], 1
        with streaming(self.tokenizer), torch.no_grad():
            inputs.append(_to_model([first], grid, s, self.device))
            latents.append(encode_latents(self.tokenizer, inputs[-1], True, self.mode))
            while count < gop:
                group = []
                for frame in frames:
                    group.append(frame)
                    if len(group) == min(f * self.window, gop - count):
                        break
                if not group:
                    break
                count += len(group)
                group += [group[-1]] * (-len(group) % f)
                inputs.append(_to_model(group, grid, s, self.device))
                latents.append(encode_latents(self.tokenizer, inputs[-1], False, self.mode))
                if not searching:
                    inputs.clear()
        chunk_latents = torch.cat(latents, dim=2)
        if not searching:
            return EncodedChunk(self.tokenizer.quantizer.token_bits(chunk_latents)[0].cpu().numpy(), count)
        video = torch.cat(inputs, dim=2)
        bits = search_bits(self.tokenizer, video, chunk_latents, keep_bits, search, previous_error)[0].cpu().numpy()
        last_error = None
        if search.temporal_weight > 0:
            last = video[:, :, count - 1 : count]
            *_, decoded = self.decode_chunk(bits[:keep_bits], count, video.shape[-2], video.shape[-1])
            last_error = _to_model([decoded[-1]], grid, s, self.device) - last
        return EncodedChunk(bits, count, last_error)

    def decode_chunk(
        self, bits: np.ndarray | Iterable[np.ndarray], frame_count: int, height: int, width: int
    ) -> Iterator[np.ndarray]:
        """Decode one chunk's bits (``b x T' x gh x gw``, or an iterable of its latent frames
        ``b x gh x gw`` so that only a window of them is ever held), yielding uint8 frames
        (``T x H x W x 3``) a window at a time, ``frame_count`` frames in all."""
        latent = iter(np.moveaxis(bits, 1, 0) if isinstance(bits, np.ndarray) else bits)
        left, first = frame_count, True
        plan = self.tile_plan(height, width)
        window = 1 if plan else self.window
        with streaming(self.tokenizer), contextlib.closing(TiledDecoding(self.tokenizer.decoder, plan, self.cfg.spatial_factor)) if plan else contextlib.nullcontext() as tiled:  # fmt: skip
            while True:
                group = list(itertools.islice(latent, 1 if first else window))
                if not group:
                    break
                codes = torch.from_numpy(np.stack(group, axis=1)).to(self.device)[None]
                if tiled is None:
                    frames = _to_frames(decode_bits(self.tokenizer, codes, first, self.mode), height, width)[:left]
                else:
                    frames = tiled.decode(codes, first, height, width, self._decode_tile)[:left]
                left -= len(frames)
                first = False
                yield frames

    def _decode_tile(self, bits: torch.Tensor, first: bool) -> torch.Tensor:
        return decode_bits(self.tokenizer, bits, first, self.mode)

    def tile_plan(self, height: int, width: int) -> TilePlan | None:
        """How frames of this size are decoded within ``memory_budget`` (None: whole frames)."""
        if not self.memory_budget:
            return None
        if self._probe is None:
            self._probe = probe_decoder(self.tokenizer.decoder)
        halo, state_bytes = self._probe
        s = self.cfg.spatial_factor
        grid = (-(-height // s), -(-width // s))
        if plan_tiles(grid, self.cfg.temporal_factor * self.window, s, state_bytes, halo, self.memory_budget) is None:
            return None
        return plan_tiles(grid, self.cfg.temporal_factor, s, state_bytes, halo, self.memory_budget) or TilePlan(
            grid, grid, halo, False
        )  # window 1 fits whole frames

    def use_update(self, update: tuple[int, bytes] | None) -> None:
        """Apply the decoder update (record number, payload; :mod:`lfqcodec.adapt`) for the next
        chunks; ``None``: the shipped decoder. A payload that does not parse raises FormatError."""
        if self._updates is None:
            self._updates = UpdateState(self.tokenizer.decoder)
        self._updates.use(*(update or (None, None)))


@dataclass(frozen=True)
class EncodeReport:
    path: Path
    header: StreamHeader
    file_bytes: int
    seconds: float
    warnings: list[str] = field(default_factory=list)  # e.g. no entropy model for this tokenizer
    mode: str = ""  # how the network ran (lfqcodec.inference.InferenceMode.describe)

    @property
    def bits_per_pixel(self) -> float:
        return self.file_bytes * 8 / max(1, self.header.width * self.header.height * self.header.frame_count)

    @property
    def kbit_per_second(self) -> float:
        seconds = self.header.frame_count / self.header.fps
        return self.file_bytes * 8 / 1000 / float(seconds) if seconds else 0.0


def _progress(total: int | None, desc: str, enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total or None, desc=desc, unit="frame", leave=False, dynamic_ncols=True)


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
    see :mod:`lfqcodec.inference`; ``pipeline`` reads frames in a background thread
    (:mod:`lfqcodec.pipeline`; same output)."""
    from .videoio import VideoSource  # PyAV: only where a video file is read

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
    ``search_steps`` > 0 searches the bits against the decoder (:mod:`lfqcodec.search`): better
    pictures, same decoder, far slower encoding (each step is a decoder forward and backward pass
    over the chunk; measured in ``models/lfq-base.md``). ``preset`` (:mod:`lfqcodec.preset`): slower
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
    header.metadata["precision"] = codec.mode.precision  # bits may differ by it near zero (lfqcodec.inference)
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
    return EncodeReport(dst, header, dst.stat().st_size, time.time() - started, warnings, codec.mode.describe())


def encode_chunks(
    codec: Codec,
    frames: Iterable[np.ndarray],
    width: int,
    height: int,
    gop: int,
    keep: int,
    scenecut: float = DEFAULT_SCENECUT,
    search: SearchConfig | None = None,
) -> Iterator[EncodedChunk]:
    """The chunks :func:`encode_frames` writes, in memory: RGB frames (``height x width x 3`` uint8)
    in, one :class:`EncodedChunk` per chunk out (up to ``gop`` frames, a new one at each scene cut;
    the first ``keep`` of its bits are the ones a file stores). Settings are not checked here."""
    s = codec.cfg.spatial_factor
    grid = (-(-height // s), -(-width // s))
    splitter = ChunkSplitter(_check_size(frames, width, height), scenecut)
    previous_error = None
    while True:
        chunk_frames = splitter.chunk()
        first = next(chunk_frames, None)
        if first is None:
            return
        if splitter.starts_scene:
            previous_error = None
        chunk = codec.encode_chunk(itertools.chain([first], chunk_frames), gop, grid, keep, search, previous_error)
        previous_error = chunk.last_error
        yield chunk


def _check_size(frames: Iterable[np.ndarray], width: int, height: int) -> Iterator[np.ndarray]:
    for frame in frames:
        if frame.shape[:2] != (height, width):
            raise LfqError(
                f"frame size changes mid-stream ({frame.shape[1]}x{frame.shape[0]}, expected {width}x{height})"
            )
        yield frame


