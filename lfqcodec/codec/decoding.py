"""The file-level decode path: open and check an ``.lfq`` file against the model, decode frames,
salvage, export tokens and describe files (``lfqcodec decode / tokens / info``).

Memory is bounded by the work, not by what a header claims: chunk bits are read one latent frame
at a time (:meth:`LfqReader.iter_chunk`) and decoded ``window`` latent frames at a time, so peak
memory is about the network's working set for ``window`` latent frames (``4 * window`` frames) plus
a few latent frames of bits; ``tokens`` writes its arrays one latent frame at a time. ``max_pixels``
refuses large frames up front (as ffmpeg's ``-max_pixels``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import safe_open

from ..model.checkpoint import MODELS_DIR, LoadedModel, load_model, retired_model_note
from ..format.container import LfqReader, StreamHeader
from ..format.header import decode_header, header_bytes_limit
from ..entropy.store import find_by_id
from ..base.errors import FormatError, LfqError, ModelError, shorten
from ..format.salvage import SalvageLog, chunk_spans
from ..model.tiling import DEFAULT_MAX_MEMORY, decoder_budget, describe_plan


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
        f"this file was made with model {shorten(name)} ({header.model_id.hex()}), which is not installed"
        + (retired_model_note(header.model_id) or "; pass --model")
    )


def _open(path: str | os.PathLike):
    path = Path(path)
    if path.is_dir():
        raise LfqError(f"{path} is a directory, not an .lfq file")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise LfqError(f"cannot open {path}: {exc.strerror or exc}") from None


def read_header(path: str | os.PathLike) -> StreamHeader:
    """The checked header of ``path`` alone: no index read, no salvage scan."""
    with _open(path) as handle:
        try:
            return decode_header(handle.read(header_bytes_limit()))[0]
        except FormatError as exc:
            raise FormatError(f"{path}: {exc}") from None


def check_output_rate(fps) -> None:
    """Video outputs (FFmpeg through PyAV) take a frame rate whose terms are below 2^31; the
    format allows 32-bit terms."""
    if not (fps.numerator < 2**31 and fps.denominator < 2**31):
        raise LfqError(f"frame rate {fps.numerator}/{fps.denominator} cannot be written to a video file "
                       "(numerator and denominator must be below 2^31)")  # fmt: skip


def open_reader(path: str | os.PathLike, salvage: bool = False, entropy: bool = False) -> tuple[LfqReader, object]:
    """An :class:`LfqReader` on ``path`` and its open file. ``entropy``: also load the entropy model
    a 2.0 file names (needed to read its context-coded chunks)."""
    handle = _open(path)
    try:
        reader = LfqReader(handle, salvage=salvage)
        if entropy and reader.header.entropy_id != bytes(16):
            reader.entropy_model = find_by_id(reader.header.entropy_id, MODELS_DIR)
        return reader, handle
    except FormatError as exc:
        handle.close()
        raise FormatError(f"{path}: {exc}") from None
    except BaseException:
        handle.close()
        raise


# Frames above 4K UHD are refused unless the caller lifts the limit: decoding time grows with the frame size (memory
# does not: lfqcodec.model.tiling), and a 30-byte header can claim 16384 x 16384.
DEFAULT_MAX_PIXELS = 3840 * 2160


def check_size(h: StreamHeader, max_pixels: int | None) -> None:
    """Refuse frames larger than the user's limit before any work is done."""
    if max_pixels and h.width * h.height > max_pixels:
        raise LfqError(f"frame size {h.width}x{h.height} exceeds --max-pixels {max_pixels} (0 = no limit)")


def check_against_model(src: str | os.PathLike, h: StreamHeader, loaded: LoadedModel) -> None:
    """Every header field the model determines must match it (FORMAT.md, "Checked against the model")."""
    if loaded.model_id != h.model_id:
        raise ModelError(
            f"{src} was made with model {shorten(h.metadata.get('model_name', '?'))} ({h.model_id.hex()}), "
            f"not {loaded.name!r} ({loaded.model_id.hex()})"
        )
    cfg = loaded.config
    expected = {"temporal factor": (h.temporal_factor, cfg.temporal_factor),
                "spatial factor": (h.spatial_factor, cfg.spatial_factor),
                "model bits": (h.model_bits, cfg.num_bits)}  # fmt: skip
    for name, (got, want) in expected.items():
        if got != want:
            raise FormatError(f"{src}: header says {name} {got}, but model {loaded.name!r} has {want}")
    if h.bits not in cfg.quality_bits.values():
        raise FormatError(f"{src}: {h.bits} bits per token is none of model {loaded.name!r}'s qualities "
                          f"({', '.join(f'{q} {b}' for q, b in cfg.quality_bits.items())})")  # fmt: skip


@dataclass(frozen=True)
class DecodeReport:
    path: Path
    frames: int
    seconds: float
    lost: list[tuple[int, int]] = field(default_factory=list)  # (first, last) frame ranges replaced or missing (salvage)
    lost_updates: list[tuple[int, int, int]] = field(default_factory=list)  # (record, first chunk, last chunk)
    mode: str = ""  # how the network ran (lfqcodec.model.inference.InferenceMode.describe)
    notes: list[str] = field(default_factory=list)  # salvage: every frame invented, record skipped or not trusted


def decode_frames(
    src: str | os.PathLike,
    *,
    device: str = "auto",
    start: int = 0,
    frames: int | None = None,
    model: str | os.PathLike | LoadedModel | None = None,
    window: int = 2,
    salvage: bool = False,
    lost: list[tuple[int, int]] | None = None,
    lost_updates: list[tuple[int, int, int]] | None = None,
    salvage_notes: list[str] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    precision: str = "auto",
    max_memory: int = DEFAULT_MAX_MEMORY,
    writer_suffix: str | None = None,
    notes: list[str] | None = None,
) -> Iterator[np.ndarray]:
    """Yield the decoded RGB frames (``H x W x 3`` uint8) of ``src``, from ``start``, at most ``frames``.

    Only the chunks that hold the range are read and decoded. Checks (model identity and the fields
    it determines, frame range, limits) run when iteration starts. With ``salvage``, a damaged or
    missing chunk does not stop decoding: its frames are replaced by the last good frame (mid-grey
    if there is none) and its range ``(first, last)`` is appended to ``lost``; output ends with the
    last intact chunk (later frames are reported in ``lost``, not synthesised). A damaged decoder
    update is reported in ``lost_updates`` and its chunks decoded without it. ``max_memory``: peak
    bytes of the process (with a writer for ``writer_suffix`` frames, if given); frames too large for
    it are decoded in tiles (:mod:`lfqcodec.model.tiling`, the same pixels); 0 = whole frames always.
    ``notes`` receives how the network runs (precision, layout, tiles)."""
    from .chunks import Codec
    from ..model.device import select_device

    reader, handle = open_reader(src, salvage, entropy=True)
    with handle:
        h = reader.header
        check_size(h, max_pixels)
        end = h.frame_count if frames is None else min(h.frame_count, start + frames)
        if not 0 <= start < h.frame_count or end <= start:
            if 0 <= start < h.frame_count:
                raise LfqError(f"--frames {frames}: decode at least one frame")
            raise LfqError(f"--start {start} is outside the file's frames 0..{h.frame_count - 1}")
        loaded = model if isinstance(model, LoadedModel) else load_model(find_model_for(h, model))
        check_against_model(src, h, loaded)
        log = SalvageLog(reader, start, end) if salvage else None  # refuses a plan the bound rules out
        if log is not None:
            end = log.stop
            if lost is not None:
                lost.extend(log.lost_tail())
        budget = decoder_budget(max_memory, h.width * h.height, writer_suffix)
        codec = Codec(loaded, select_device(device), window, precision, budget)
        if notes is not None:
            notes.append(codec.mode.describe())
            notes.append(describe_plan(codec.tile_plan(h.height, h.width)))
        previous = np.full((h.height, h.width, 3), 128, dtype=np.uint8)
        try:
            for position, first, count in chunk_spans(reader, start, end):
                blocks: Iterable[np.ndarray] | None = None
                if position is not None:
                    try:
                        entry = reader.chunks[position]
                        if log is not None and entry.coder:  # its whole stream checked before a frame is output
                            for _ in reader.iter_chunk(position):
                                pass
                        _apply_update(reader, codec, position, log, lost_updates)
                        blocks = codec.decode_chunk(reader.iter_chunk(position), count, h.height, h.width)
                    except FormatError as exc:
                        if log is None:
                            hint = "" if "--salvage" in str(exc) else "; lfqcodec decode --salvage decodes the intact chunks"
                            raise FormatError(f"{src}: {exc}{hint}") from None
                        span = log.fill(first, count, str(exc), damaged=True)
                else:
                    span = log.fill(first, count, "chunk not found", damaged=False)
                if blocks is None:
                    if lost is not None:
                        lost.append(span)
                    blocks = (block for block in [np.broadcast_to(previous, (count, *previous.shape))])
                elif log is not None:
                    log.decoded += 1
                at = first
                decoded = iter(blocks)
                with contextlib.closing(decoded) if hasattr(decoded, "close") else contextlib.nullcontext():
                    for block in decoded:  # causal: blocks before ``start`` are decoded, none after ``end``
                        lo, hi = max(start - at, 0), min(end - at, len(block))
                        if hi > lo:
                            yield from block[lo:hi]
                        if len(block):
                            previous = block[-1]
                        at += len(block)
                        if at >= end:
                            break
            if log is not None:
                log.finish()
                if salvage_notes is not None:
                    salvage_notes.extend(log.lines())
        finally:
            codec.use_update(None)  # a caller's model gets its own weights back


def _apply_update(reader: LfqReader, codec, position: int, log: SalvageLog | None, lost_updates: list | None) -> None:
    """Give the codec the decoder update for the chunk at ``position`` (FORMAT.md, payload type 1).
    Salvage applies an update only to a chunk that names it, and says so when it cannot."""
    entry = reader.chunks[position]
    if log is None:
        codec.use_update(reader.update_for_chunk(entry.index))  # parses the payload: a damaged one is refused here
        return
    covering = next((e for e in reader.updates if e.first_chunk <= entry.index < e.first_chunk + e.chunk_count), None)
    codec.use_update(None)
    if covering is not None and covering.record != entry.update:
        log.note(f"decoder update (record {covering.record}) covers chunk {entry.index}, which names "
                 + (f"record {entry.update}" if entry.update >= 0 else "none") + ": not applied to it")
    if entry.update < 0:
        return
    if covering is None or covering.record != entry.update:
        log.note(f"chunk {entry.index} names decoder update (record {entry.update}), which was not found: "
                 "decoded without it")  # fmt: skip
        return
    try:
        codec.use_update(reader.update_for_chunk(entry.index))
    except FormatError:
        codec.use_update(None)
        info = (covering.record, covering.first_chunk, covering.first_chunk + covering.chunk_count - 1)
        if lost_updates is not None and info not in lost_updates:
            lost_updates.append(info)


def write_frames(dst: Path, frames: Iterator[np.ndarray], width: int, height: int, fps, suffix: str, total: int,
                 desc: str, progress: bool = False, pipeline: bool = True) -> int:
    """Write ``frames`` to ``dst`` atomically in the format of ``suffix`` (a writer thread with ``pipeline``);
    returns the frames written. The first frame is taken before the output exists, so the checks a frame
    iterator runs when it starts fail without leaving a file."""
    import itertools

    from ..base.atomic import atomic_output
    from ..io.pipeline import BackgroundWriter
    from ..io.videoio import VideoWriter
    from .chunks import _progress

    first = next(frames)
    written = 0
    with atomic_output(dst) as tmp, _progress(total, desc, progress) as bar:
        writer: VideoWriter | BackgroundWriter = VideoWriter(tmp, width, height, fps, suffix)
        if pipeline:
            writer = BackgroundWriter(writer)
        try:
            for frame in itertools.chain([first], frames):
                writer.write(frame)
                written += 1
                if bar is not None:
                    bar.update(1)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    return written


def decode_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    device: str = "auto",
    start: int = 0,
    frames: int | None = None,
    model: str | os.PathLike | None = None,
    window: int = 2,
    overwrite: bool = False,
    progress: bool = False,
    salvage: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    precision: str = "auto",
    pipeline: bool = True,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> DecodeReport:
    """Decode ``src`` (``.lfq``) to ``dst``; the format follows ``dst``'s extension. ``start`` and
    ``frames`` select a frame range (only the chunks holding it are decoded); a ``.png`` holds one
    frame, so without ``frames`` it is the one at ``start``. ``precision``: see
    :mod:`lfqcodec.model.inference`; ``pipeline`` writes frames in a background thread
    (:mod:`lfqcodec.io.pipeline`; same output)."""
    import time

    from ..base.atomic import check_destination
    from ..io.videoio import check_output_format

    started = time.time()
    suffix = check_output_format(dst)
    dst = check_destination(dst, overwrite, (src,))
    h = read_header(src)  # the reader (and a salvage scan) runs once, in decode_frames
    check_size(h, max_pixels)
    check_output_rate(h.fps)
    if suffix == ".png" and frames is None:
        frames = 1
    count = max(0, min(h.frame_count, start + (frames if frames is not None else h.frame_count)) - start)
    if suffix == ".png" and count > 1:
        raise LfqError(
            f"a .png output holds one frame but {count} were asked for (leave out --frames, or use a video extension)"
        )
    lost: list[tuple[int, int]] = []
    lost_updates: list[tuple[int, int, int]] = []
    salvage_notes: list[str] = []
    notes: list[str] = []
    decoded = decode_frames(src, device=device, start=start, frames=frames, model=model, window=window,
                            salvage=salvage, lost=lost, lost_updates=lost_updates, salvage_notes=salvage_notes,
                            max_pixels=max_pixels, precision=precision, max_memory=max_memory, writer_suffix=suffix,
                            notes=notes)  # fmt: skip
    written = write_frames(dst, decoded, h.width, h.height, h.fps, suffix, count, "decode", progress, pipeline)
    return DecodeReport(dst, written, time.time() - started, lost, lost_updates, "; ".join(notes), salvage_notes)
