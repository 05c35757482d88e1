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

from .checkpoint import MODELS_DIR, LoadedModel, load_model, retired_model_note
from .container import LfqReader, StreamHeader
from .entropy_store import find_by_id
from .errors import FormatError, LfqError, ModelError
from .tiling import DEFAULT_MAX_MEMORY, decoder_budget, describe_plan


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
        f"this file was made with model {name!r} ({header.model_id.hex()}), which is not installed"
        + (retired_model_note(header.model_id) or "; pass --model")
    )


def open_reader(path: str | os.PathLike, salvage: bool = False, entropy: bool = False) -> tuple[LfqReader, object]:
    """An :class:`LfqReader` on ``path`` and its open file. ``entropy``: also load the entropy model
    a 2.0 file names (needed to read its context-coded chunks)."""
    path = Path(path)
    if path.is_dir():
        raise LfqError(f"{path} is a directory, not an .lfq file")
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise LfqError(f"cannot open {path}: {exc.strerror or exc}") from None
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
# does not: lfqcodec.tiling), and a 30-byte header can claim 16384 x 16384.
DEFAULT_MAX_PIXELS = 3840 * 2160


def check_size(h: StreamHeader, max_pixels: int | None) -> None:
    """Refuse frames larger than the user's limit before any work is done."""
    if max_pixels and h.width * h.height > max_pixels:
        raise LfqError(f"frame size {h.width}x{h.height} exceeds --max-pixels {max_pixels} (0 = no limit)")


def check_against_model(src: str | os.PathLike, h: StreamHeader, loaded: LoadedModel) -> None:
    """Every header field the model determines must match it (FORMAT.md, "Checked against the model")."""
    if loaded.model_id != h.model_id:
        raise ModelError(
            f"{src} was made with model {h.metadata.get('model_name', '?')!r} ({h.model_id.hex()}), "
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
    mode: str = ""  # how the network ran (lfqcodec.inference.InferenceMode.describe)


def chunk_spans(reader: LfqReader) -> Iterator[tuple[int | None, int, int]]:
    """``(position in reader.chunks or None when missing, first frame, frame count)`` covering the
    file in order up to its last intact chunk. Only a salvage reader has gaps: each becomes one
    missing span (split at chunk boundaries when the chunk length is fixed)."""
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


def salvage_plan(reader: LfqReader, start: int, end: int) -> tuple[int, list[tuple[int, int]]]:
    """Where salvaged output ends (the last intact chunk's end, at most ``end``) and the frame
    ranges after it that are reported lost, not synthesised. Refuses to fill gaps longer in total
    than the frames recovered plus one chunk length (FORMAT.md, "Salvage")."""
    if not reader.chunks:
        raise FormatError("no intact chunk found: nothing to salvage")
    last = reader.chunks[-1].first_frame + reader.chunks[-1].frame_count
    stop = min(end, last)
    recovered = missing = 0
    for position, first, count in chunk_spans(reader):
        inside = max(0, min(first + count, stop) - max(first, start))
        if position is None:
            missing += inside
        else:
            recovered += inside
    if missing > recovered + reader.header.gop:
        raise FormatError(f"only {recovered} frames of {start}..{stop - 1} are intact; salvage will not "
                          f"synthesise the {missing} lost ones")  # fmt: skip
    return stop, ([(max(start, last), end - 1)] if end > last else [])


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
    it are decoded in tiles (:mod:`lfqcodec.tiling`, the same pixels); 0 = whole frames always.
    ``notes`` receives how the network runs (precision, layout, tiles)."""
    from .api import Codec, select_device

    reader, handle = open_reader(src, salvage, entropy=True)
    with handle:
        h = reader.header
        check_size(h, max_pixels)
        end = h.frame_count if frames is None else min(h.frame_count, start + frames)
        if not 0 <= start < h.frame_count or end <= start:
            raise LfqError(f"frame range {start}..{end - 1} is outside the file's {h.frame_count} frames")
        loaded = model if isinstance(model, LoadedModel) else load_model(find_model_for(h, model))
        check_against_model(src, h, loaded)
        if salvage:
            end, tail = salvage_plan(reader, start, end)
            if lost is not None:
                lost.extend(tail)
        budget = decoder_budget(max_memory, h.width * h.height, writer_suffix)
        codec = Codec(loaded, select_device(device), window, precision, budget)
        if notes is not None:
            notes.append(codec.mode.describe())
            notes.append(describe_plan(codec.tile_plan(h.height, h.width)))
        previous = np.full((h.height, h.width, 3), 128, dtype=np.uint8)
        try:
            for position, first, count in chunk_spans(reader):
                if first + count <= start or first >= end:
                    continue
                blocks: Iterable[np.ndarray]
                try:
                    if position is None:
                        raise FormatError(f"frames {first}..{first + count - 1}: chunk not found")
                    _apply_update(reader, codec, reader.chunks[position].index, salvage, lost_updates)
                    blocks = codec.decode_chunk(reader.iter_chunk(position), count, h.height, h.width)
                except FormatError as exc:
                    if not salvage:
                        raise FormatError(f"{src}: {exc}") from None
                    if lost is not None:
                        lost.append((max(first, start), min(first + count, end) - 1))
                    blocks = [np.broadcast_to(previous, (count, *previous.shape))]
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
        finally:
            codec.use_update(None)  # a caller's model gets its own weights back


def _apply_update(reader: LfqReader, codec, chunk: int, salvage: bool, lost_updates: list | None) -> None:
    """Give the codec the decoder update covering ``chunk`` (FORMAT.md, payload type 1)."""
    try:
        update = reader.update_for_chunk(chunk)
        codec.use_update(update)  # parses the payload: a damaged one is refused here
        return
    except FormatError:
        if not salvage:
            raise
        entry = next(e for e in reader.updates if e.first_chunk <= chunk < e.first_chunk + e.chunk_count)
        info = (entry.record, entry.first_chunk, entry.first_chunk + entry.chunk_count - 1)
        if lost_updates is not None and info not in lost_updates:
            lost_updates.append(info)
    codec.use_update(None)


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
    :mod:`lfqcodec.inference`; ``pipeline`` writes frames in a background thread
    (:mod:`lfqcodec.pipeline`; same output)."""
    import itertools
    import time

    from .api import _progress
    from .atomic import atomic_output, check_destination
    from .pipeline import BackgroundWriter
    from .videoio import VideoWriter, check_output_format

    started = time.time()
    suffix = check_output_format(dst)
    dst = check_destination(dst, overwrite, (src,))
    reader, handle = open_reader(src, salvage)
    with handle:
        h = reader.header
    check_size(h, max_pixels)
    if suffix == ".png" and frames is None:
        frames = 1
    count = max(0, min(h.frame_count, start + (frames if frames is not None else h.frame_count)) - start)
    if suffix == ".png" and count > 1:
        raise LfqError(
            f"a .png output holds one frame but {count} were asked for (leave out --frames, or use a video extension)"
        )
    lost: list[tuple[int, int]] = []
    lost_updates: list[tuple[int, int, int]] = []
    notes: list[str] = []
    decoded = decode_frames(src, device=device, start=start, frames=frames, model=model, window=window,
                            salvage=salvage, lost=lost, lost_updates=lost_updates, max_pixels=max_pixels,
                            precision=precision, max_memory=max_memory, writer_suffix=suffix, notes=notes)  # fmt: skip
    first = next(decoded)  # runs the checks before an output file is created
    written = 0
    with atomic_output(dst) as tmp, _progress(count, "decode", progress) as bar:
        writer: VideoWriter | BackgroundWriter = VideoWriter(tmp, h.width, h.height, h.fps, suffix)
        if pipeline:
            writer = BackgroundWriter(writer)
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
    return DecodeReport(dst, written, time.time() - started, lost, lost_updates, "; ".join(notes))
