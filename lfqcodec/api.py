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
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open

from . import __version__
from . import preset as presets
from .adapt import UpdateState, update_for
from .atomic import atomic_output, check_destination
from .checkpoint import MODELS_DIR, LoadedModel, load_model
from .container import LfqReader, LfqWriter, StreamHeader
from .errors import FormatError, LfqError, ModelError
from .layers import streaming
from .quantizer import bits_to_indices, factorize_indices
from .scenecut import DEFAULT_THRESHOLD as DEFAULT_SCENECUT
from .scenecut import ChunkSplitter
from .search import SearchConfig, search_bits
from .videoio import VideoSource, VideoWriter, check_output_format

DEFAULT_GOP = 33  # frames per independently decodable chunk (1 + 4k)
DEFAULT_ZSTD_LEVEL = 19
DEFAULT_WINDOW = 2  # latent frames coded per step (memory vs. speed)


def select_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present. On CUDA, TF32 is switched off so that the bitstream matches
    the CPU's (see docs/FORMAT.md, "Determinism")."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LfqError("--device cuda was asked for, but no CUDA device is available")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif device != "cpu":
        raise LfqError(f"unknown device {device!r} (use auto, cpu or cuda)")
    if device == "cpu" and os.cpu_count():
        torch.set_num_threads(os.cpu_count())
    return torch.device(device)


def _to_model(frames: list[np.ndarray], grid: tuple[int, int], factor: int, device: torch.device) -> torch.Tensor:
    """RGB uint8 frames -> ``1 x 3 x T x H' x W'`` in [-1, 1], edge-padded to the latent grid."""
    video = torch.from_numpy(np.stack(frames)).to(device).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    pad_h, pad_w = grid[0] * factor - video.shape[-2], grid[1] * factor - video.shape[-1]
    if pad_h or pad_w:
        video = F.pad(video.flatten(1, 2), (0, pad_w, 0, pad_h), mode="replicate").view(
            1, 3, len(frames), grid[0] * factor, grid[1] * factor
        )
    return video


def _to_frames(video: torch.Tensor, height: int, width: int) -> np.ndarray:
    """``1 x 3 x T x H' x W'`` in [-1, 1] -> ``T x height x width x 3`` uint8 (cropped)."""
    video = video[0, :, :, :height, :width].float()
    return ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


class EncodedChunk(NamedTuple):
    bits: np.ndarray  # B x T' x gh x gw bool
    frames: int  # frames coded (0: the input had none left)
    last_error: torch.Tensor | None = None  # decoded - source of the last frame (searched chunks only)


class Codec:
    """A loaded model on a device, with the chunk-level encode and decode steps."""

    def __init__(self, model: LoadedModel, device: torch.device, window: int = DEFAULT_WINDOW):
        self.model = model
        self.device = device
        self.window = max(1, window)
        self.tokenizer = model.tokenizer.to(device)
        self.cfg = model.config
        self.dtype = next(self.tokenizer.parameters()).dtype

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
            latents.append(self.tokenizer.encoder(inputs[-1].to(self.dtype), first=True))
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
                latents.append(self.tokenizer.encoder(inputs[-1].to(self.dtype), first=False))
                if not searching:
                    inputs.clear()
        chunk_latents = torch.cat(latents, dim=2)
        if not searching:
            return EncodedChunk((chunk_latents > 0)[0].cpu().numpy(), count)
        video = torch.cat(inputs, dim=2)
        bits = search_bits(self.tokenizer, video, chunk_latents, keep_bits, search, previous_error)[0].cpu().numpy()
        last_error = None
        if search.temporal_weight > 0:
            last = video[:, :, count - 1 : count]
            *_, decoded = self.decode_chunk(bits[:keep_bits], count, video.shape[-2], video.shape[-1])
            last_error = _to_model([decoded[-1]], grid, s, self.device) - last
        return EncodedChunk(bits, count, last_error)

    def decode_chunk(self, bits: np.ndarray, frame_count: int, height: int, width: int) -> Iterator[np.ndarray]:
        """Decode one chunk's bits (``b x T' x gh x gw``), yielding uint8 frames (``T x H x W x 3``)
        a window at a time, ``frame_count`` frames in all."""
        codes = torch.from_numpy(bits).to(self.device)[None]
        windows = [(0, 1)] + [(lo, lo + self.window) for lo in range(1, codes.shape[2], self.window)]
        left = frame_count
        with streaming(self.tokenizer):
            for lo, hi in windows:
                video = self.tokenizer.decode(codes[:, :, lo:hi], first=lo == 0)
                frames = _to_frames(video, height, width)[:left]
                left -= len(frames)
                yield frames


@dataclass(frozen=True)
class EncodeReport:
    path: Path
    header: StreamHeader
    file_bytes: int
    seconds: float

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
    preset: str = "medium",
) -> EncodeReport:
    """Compress the first video stream of ``src`` into the ``.lfq`` file ``dst``."""
    started = time.time()
    dst = check_destination(dst, overwrite, (src,))
    with VideoSource(src) as source:
        frames = source.frames()
        if max_frames is not None:
            frames = (frame for _, frame in zip(range(max_frames), frames))
        report = encode_frames(
            frames, dst, width=source.info.width, height=source.info.height, fps=source.info.fps,
            time_base=source.info.time_base, metadata=source.info.metadata, model=model, quality=quality,
            device=device, gop=gop, zstd_level=zstd_level, window=window, scenecut=scenecut, search_steps=search_steps,
            preset=preset, overwrite=True, progress_total=source.info.frame_count_hint if progress else None,
        )  # fmt: skip
    return EncodeReport(report.path, report.header, report.file_bytes, time.time() - started)


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
    preset: str = "medium",
) -> EncodeReport:
    """Compress RGB frames (``height x width x 3`` uint8 each) into the ``.lfq`` file ``dst``.

    A new chunk starts at each detected scene cut (``scenecut``: the mean absolute luma change, on
    0..255, that can mark one; 0 turns detection off, so chunks are exactly ``gop`` frames).
    ``search_steps`` > 0 searches the bits against the decoder (:mod:`lfqcodec.search`): better
    pictures, same decoder, far slower encoding (each step is a decoder forward and backward pass
    over the chunk; measured in ``models/lfq-base.md``). ``preset`` (:mod:`lfqcodec.preset`): slower
    presets fit a decoder update per run of chunks and search the bits, deciding by rate and distortion.
    ``progress_total`` (frames expected, 0 if unknown) shows a progress bar on stderr."""
    started = time.time()
    dst = check_destination(dst, overwrite)
    if not 1 <= zstd_level <= 22:
        raise LfqError(f"zstd level {zstd_level} outside 1..22")
    chosen = presets.resolve(preset)
    window, zstd_level = chosen.window or window, chosen.zstd_level or zstd_level
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    cfg = loaded.config
    if quality not in cfg.quality_bits:
        raise LfqError(f"unknown quality {quality!r} (this model has {', '.join(cfg.quality_bits)})")
    if gop < 1 or (gop - 1) % cfg.temporal_factor:
        raise LfqError(f"--gop must be 1 + {cfg.temporal_factor}k frames (e.g. 17, 33, 65), got {gop}")
    codec = Codec(loaded, select_device(device), window)
    keep = cfg.quality_bits[quality]
    s = cfg.spatial_factor
    grid = (-(-height // s), -(-width // s))
    header = StreamHeader(
        model_id=loaded.model_id, width=width, height=height, frame_count=0, fps=Fraction(fps),
        time_base=Fraction(time_base or 1 / Fraction(fps)), bits=keep, model_bits=cfg.num_bits,
        temporal_factor=cfg.temporal_factor, spatial_factor=s, gop=gop, grid_height=grid[0], grid_width=grid[1],
        metadata={"model_name": loaded.name, "quality": quality, "preset": preset, "encoder": f"lfqcodec {__version__}",
                  **(metadata or {})},
    )  # fmt: skip
    if scenecut < 0:
        raise LfqError(f"--scenecut must be >= 0, got {scenecut}")
    if search_steps < 0:
        raise LfqError(f"--search must be >= 0, got {search_steps}")
    if search_steps and (chosen.fit is not None or chosen.search_steps):
        chosen = replace(chosen, search_steps=search_steps)
    if search_steps or chosen.search_steps:
        header.metadata["search_steps"] = str(search_steps or chosen.search_steps)
    search = SearchConfig(steps=search_steps)
    splitter = ChunkSplitter(_check_size(frames, width, height), scenecut)
    show = progress_total is not None
    with atomic_output(dst) as tmp, open(tmp, "wb") as out, _progress(progress_total, "encode", show) as bar:
        writer = LfqWriter(out, header, zstd_level)
        previous_error = None
        if chosen.fit is not None or chosen.search_steps:
            runner = presets.RunEncoder(codec, grid, keep, chosen, zstd_level)
            presets.write_runs(runner, splitter, writer, gop, bar)
        while chosen.fit is None and not chosen.search_steps:
            chunk_frames = splitter.chunk()
            first = next(chunk_frames, None)
            if first is None:
                break
            if splitter.starts_scene:
                previous_error = None
            chunk = codec.encode_chunk(itertools.chain([first], chunk_frames), gop, grid, keep, search, previous_error)
            writer.write_chunk(chunk.bits[:keep], chunk.frames)
            previous_error = chunk.last_error
            if bar is not None:
                bar.update(chunk.frames)
        if not writer.frames:
            raise LfqError("no frames could be read from the input")
        header = writer.close()
    return EncodeReport(dst, header, dst.stat().st_size, time.time() - started)


def _check_size(frames: Iterable[np.ndarray], width: int, height: int) -> Iterator[np.ndarray]:
    for frame in frames:
        if frame.shape[:2] != (height, width):
            raise LfqError(
                f"frame size changes mid-stream ({frame.shape[1]}x{frame.shape[0]}, expected {width}x{height})"
            )
        yield frame


def find_model_for(header: StreamHeader, model: str | os.PathLike | None = None) -> str | Path:
    """The model a file was made with: ``model`` if given (checked), else the shipped one whose hash matches."""
    name = header.metadata.get("model_name", "?")
    if model is not None:
        return model
    if MODELS_DIR.is_dir():
        for path in sorted(MODELS_DIR.glob("*.safetensors")):
            with contextlib.suppress(Exception), safe_open(str(path), framework="pt") as handle:
                sha = (handle.metadata() or {}).get("lfqcodec.sha256", "")
                if bytes.fromhex(sha)[:16] == header.model_id:
                    return path
    raise ModelError(
        f"this file was made with model {name!r} ({header.model_id.hex()}), which is not installed; pass --model"
    )


def _open_reader(path: str | os.PathLike, salvage: bool = False) -> tuple[LfqReader, object]:
    path = Path(path)
    if path.is_dir():
        raise LfqError(f"{path} is a directory, not an .lfq file")
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise LfqError(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        return LfqReader(handle, salvage=salvage), handle
    except FormatError as exc:
        handle.close()
        raise FormatError(f"{path}: {exc}") from None
    except BaseException:
        handle.close()
        raise


@dataclass(frozen=True)
class DecodeReport:
    path: Path
    frames: int
    seconds: float
    lost: list[tuple[int, int]] = field(default_factory=list)  # (first, last) frame ranges replaced (salvage)


def decode_frames(
    src: str | os.PathLike,
    *,
    device: str = "auto",
    start: int = 0,
    frames: int | None = None,
    model: str | os.PathLike | LoadedModel | None = None,
    window: int = DEFAULT_WINDOW,
    salvage: bool = False,
    lost: list[tuple[int, int]] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the decoded RGB frames (``H x W x 3`` uint8) of ``src``, from ``start``, at most ``frames``.

    Only the chunks that hold the range are read and decoded. Checks (model identity, frame range)
    run when iteration starts. With ``salvage``, a damaged or missing chunk does not stop decoding:
    its frames are replaced by the last good frame (mid-grey if there is none), so timing is kept,
    and its frame range ``(first, last)`` is appended to ``lost``."""
    reader, handle = _open_reader(src, salvage)
    with handle:
        h = reader.header
        end = h.frame_count if frames is None else min(h.frame_count, start + frames)
        if not 0 <= start < h.frame_count or end <= start:
            raise LfqError(f"frame range {start}..{end - 1} is outside the file's {h.frame_count} frames")
        loaded = model if isinstance(model, LoadedModel) else load_model(find_model_for(h, model))
        if loaded.model_id != h.model_id:
            raise ModelError(
                f"{src} was made with model {h.metadata.get('model_name', '?')!r} ({h.model_id.hex()}), "
                f"not {loaded.name!r} ({loaded.model_id.hex()})"
            )
        codec = Codec(loaded, select_device(device), window)
        updates = UpdateState(codec.tokenizer.decoder)
        previous = np.full((h.height, h.width, 3), 128, dtype=np.uint8)
        try:
            for position, first, count in _chunk_spans(reader):
                if first + count <= start or first >= end:
                    continue
                blocks: Iterable[np.ndarray]
                try:
                    if position is None:
                        raise FormatError(f"frames {first}..{first + count - 1}: chunk not found")
                    bits = reader.read_chunk(position)
                    updates.use(*update_for(reader, position))
                    blocks = codec.decode_chunk(bits, count, h.height, h.width)
                except FormatError as exc:
                    if not salvage:
                        raise FormatError(f"{src}: {exc}") from None
                    if lost is not None:
                        lost.append((max(first, start), min(first + count, end) - 1))
                    blocks = [np.broadcast_to(previous, (count, *previous.shape))]
                at = first
                for block in blocks:
                    lo, hi = max(start - at, 0), min(end - at, len(block))
                    yield from block[lo:hi]
                    if len(block):
                        previous = block[-1]
                    at += len(block)
        finally:
            updates.close()  # the caller's model keeps its own weights


def _chunk_spans(reader: LfqReader) -> Iterator[tuple[int | None, int, int]]:
    """``(position in reader.chunks or None when missing, first frame, frame count)`` covering the
    whole file in order. Only a salvage reader has gaps: each becomes one missing span (split at
    chunk boundaries when the chunk length is fixed)."""
    h, covered = reader.header, 0

    def gap(until: int) -> Iterator[tuple[None, int, int]]:
        at = covered
        while at < until:
            stop = until if h.cut_chunks else min(until, (at // h.gop + 1) * h.gop)
            yield None, at, stop - at
            at = stop

    for position, entry in enumerate(reader.chunks):
        yield from gap(entry.first_frame)
        yield position, entry.first_frame, entry.frame_count
        covered = entry.first_frame + entry.frame_count
    yield from gap(h.frame_count)


def decode_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    device: str = "auto",
    start: int = 0,
    frames: int | None = None,
    model: str | os.PathLike | None = None,
    window: int = DEFAULT_WINDOW,
    overwrite: bool = False,
    progress: bool = False,
    salvage: bool = False,
) -> DecodeReport:
    """Decode ``src`` (``.lfq``) to ``dst``; the format follows ``dst``'s extension. ``start`` and
    ``frames`` select a frame range (only the chunks holding it are decoded)."""
    started = time.time()
    suffix = check_output_format(dst)
    dst = check_destination(dst, overwrite, (src,))
    reader, handle = _open_reader(src, salvage)
    with handle:
        h = reader.header
    count = max(0, min(h.frame_count, start + (frames if frames is not None else h.frame_count)) - start)
    if suffix == ".png" and count != 1:
        raise LfqError(
            f"a .png output holds one frame but {count} were asked for (use --frames 1 or a video extension)"
        )
    lost: list[tuple[int, int]] = []
    decoded = decode_frames(src, device=device, start=start, frames=frames, model=model, window=window,
                            salvage=salvage, lost=lost)  # fmt: skip
    first = next(decoded)  # runs the checks before an output file is created
    written = 0
    with atomic_output(dst) as tmp, _progress(count, "decode", progress) as bar:
        writer = VideoWriter(tmp, h.width, h.height, h.fps, suffix)
        try:
            for frame in itertools.chain([first], decoded):
                writer.write(frame)
                written += 1
                if bar is not None:
                    bar.update(1)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return DecodeReport(dst, written, time.time() - started, lost)


def read_info(path: str | os.PathLike) -> dict:
    """Header, model, duration, bitrate and chunk table of an ``.lfq`` file, as plain data."""
    reader, handle = _open_reader(path)
    with handle:
        h = reader.header
        size = reader.file_size
        duration = float(h.frame_count / h.fps) if h.frame_count else 0.0
        return {
            "file": str(path),
            "format_version": reader.version,
            "file_bytes": size,
            "model": {"name": h.metadata.get("model_name"), "id": h.model_id.hex()},
            "quality": h.metadata.get("quality"),
            "preset": h.metadata.get("preset"),
            "width": h.width,
            "height": h.height,
            "frame_count": h.frame_count,
            "fps": f"{h.fps.numerator}/{h.fps.denominator}",
            "time_base": f"{h.time_base.numerator}/{h.time_base.denominator}",
            "duration_s": duration,
            "bits_per_token": h.bits,
            "model_bits": h.model_bits,
            "latent_grid": [h.grid_height, h.grid_width],
            "factors": {"temporal": h.temporal_factor, "spatial": h.spatial_factor},
            "gop": h.gop,
            "bits_per_pixel": size * 8 / max(1, h.width * h.height * h.frame_count),
            "kbit_per_second": size * 8 / 1000 / duration if duration else 0.0,
            "metadata": h.metadata,
            "chunks": [
                {
                    "index": c.index,
                    "offset": c.offset,
                    "bytes": c.size,
                    "first_frame": c.first_frame,
                    "frames": c.frame_count,
                }
                for c in reader.chunks
            ],
        }


@dataclass(frozen=True)
class Tokens:
    """Token indices of a whole file. ``indices`` is int64 ``T' x gh x gw`` (chunks concatenated in
    time; ``chunk_starts[i]`` is chunk ``i``'s first latent frame); ``sub_indices`` adds a last axis
    of factorized sub-tokens when asked for."""

    indices: np.ndarray
    bits: int
    chunk_starts: np.ndarray
    sub_indices: np.ndarray | None = None
    sub_bits: int | None = None
    meta: dict = field(default_factory=dict)


def read_tokens(path: str | os.PathLike, sub_bits: int | None = None) -> Tokens:
    """Token indices (bit ``i`` = channel ``i``, LSB first) of every chunk of ``path``."""
    reader, handle = _open_reader(path)
    with handle:
        h = reader.header
        if sub_bits is not None and not 1 <= sub_bits <= h.bits:
            raise LfqError(f"sub-token size {sub_bits} outside 1..{h.bits}")
        parts, starts, total = [], [], 0
        for chunk in reader.chunks:
            bits = torch.from_numpy(reader.read_chunk(chunk.index))
            parts.append(bits_to_indices(bits, dim=0))
            starts.append(total)
            total += bits.shape[1]
        indices = torch.cat(parts) if parts else torch.zeros((0, h.grid_height, h.grid_width), dtype=torch.int64)
        sub = factorize_indices(indices, h.bits, sub_bits).numpy() if sub_bits else None
        meta = {"width": h.width, "height": h.height, "frame_count": h.frame_count, "gop": h.gop,
                "temporal_factor": h.temporal_factor, "spatial_factor": h.spatial_factor}  # fmt: skip
        return Tokens(indices.numpy(), h.bits, np.array(starts, dtype=np.int64), sub, sub_bits, meta)


def export_tokens(
    src: str | os.PathLike, dst: str | os.PathLike, sub_bits: int | None = None, overwrite: bool = False
) -> Tokens:
    """Write :func:`read_tokens`'s arrays to an ``.npz`` file."""
    dst = check_destination(dst, overwrite, (src,))
    tokens = read_tokens(src, sub_bits)
    arrays = {"indices": tokens.indices, "bits": np.int64(tokens.bits), "chunk_starts": tokens.chunk_starts}
    arrays.update({k: np.int64(v) for k, v in tokens.meta.items()})
    if tokens.sub_indices is not None:
        arrays.update(sub_indices=tokens.sub_indices, sub_bits=np.int64(tokens.sub_bits))
    with atomic_output(dst) as tmp, open(tmp, "wb") as out:
        np.savez(out, **arrays)
    return tokens
