"""Token files back to video (``lfqcodec detokenize``): what the file records, checked against the
model and the options, then :meth:`lfqcodec.Tokenizer.decode_stream` into the writers of
``lfqcodec decode``, or the tokens into an ``.lfq`` file through the encoder's writer.

A token file of format 2 (``lfqcodec tokens`` / ``tokenize`` of this version) records everything
exact decoding needs: the model id, bits per token, the exact frame rate, the frame size and each
chunk's frame count. Older files and bare arrays decode where options supply what they lack
(``fps``, ``size``, ``frames``, ``gop``, ``quality``, ``model``), and are refused in one line where
they cannot; options override what a file records (``frames`` lays the tokens out again in chunks
of ``gop`` frames). :func:`read_token_input` picks the reader: an ``.npz`` (:mod:`lfqcodec.tokens.files`)
or rows of a token dataset (:mod:`lfqcodec.tokens.shards`). Memory is bounded as in ``decode``: a latent
frame of indices (a row of a shard) and the decoder's window.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .. import __version__
from ..codec.chunks import DEFAULT_GOP, DEFAULT_WINDOW, DEFAULT_ZSTD_LEVEL
from ..base.atomic import atomic_output, check_destination
from ..model.checkpoint import MODELS_DIR, LoadedModel, load_model
from ..codec.decoding import DEFAULT_MAX_PIXELS, find_model_for, write_frames
from ..base.errors import LfqError, ModelError
from ..model.quantizer import indices_to_bits
from ..model.tiling import DEFAULT_MAX_MEMORY, decoder_budget
from .files import TokenInput, read_npz
from ..model.tokenizer import latent_frames
from .tokenizer_api import Tokenizer, check_index_frame, chunk_layout

__all__ = ["DetokenizeReport", "detokenize_file"]


class _Named(NamedTuple):  # what find_model_for reads of a header
    model_id: bytes
    metadata: dict


@dataclass(frozen=True)
class DetokenizeReport:
    path: Path
    frames: int
    seconds: float
    warnings: list[str] = field(default_factory=list)  # what was assumed for an older token file
    mode: str = ""  # how the network ran (lfqcodec.model.inference.InferenceMode.describe)


@dataclass(frozen=True)
class _Plan:
    width: int
    height: int
    fps: Fraction
    chunk_frames: list[int]
    bits: int
    quality: str
    gop: int


def read_token_input(path: str | os.PathLike, shard: int | None = None, rows: str | None = None,
                     clip: str | None = None) -> TokenInput:  # fmt: skip
    """A ``.npz`` file, or rows of a token dataset (a shard file, or a folder and ``shard``):
    ``rows`` = ``N`` or ``A-B`` (inclusive), ``clip`` = the rows of that source clip, in order."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".parquet":
        from .shards import read_rows

        return read_rows(path, shard, rows, clip)
    if shard is not None or rows is not None or clip is not None:
        raise LfqError(f"--shard, --row and --clip select rows of a token dataset; {path} is not a folder or .parquet")
    return read_npz(path)


def _model(tokens: TokenInput, model: str | os.PathLike | None, warnings: list[str]) -> LoadedModel:
    """The model the tokens were made with: ``model`` if given (it must be that model when the file
    names one), else the installed one with the recorded id."""
    if tokens.model_id is None:
        loaded = load_model(model)
        warnings.append(f"{tokens.source} records no model: decoding with {loaded.name!r} ({loaded.model_id.hex()})")
        return loaded
    name = tokens.model_name or "?"
    try:
        path = find_model_for(_Named(tokens.model_id, {"model_name": name}), model)  # type: ignore[arg-type]
    except ModelError:
        raise ModelError(f"{tokens.source} was made with model {name!r} ({tokens.model_id.hex()}), which is not "
                         "installed; pass --model") from None  # fmt: skip
    loaded = load_model(path)
    if loaded.model_id != tokens.model_id:
        raise ModelError(f"{tokens.source} was made with model {name!r} ({tokens.model_id.hex()}), "
                         f"not {loaded.name!r} ({loaded.model_id.hex()})")  # fmt: skip
    return loaded


def _plan(tokens: TokenInput, loaded: LoadedModel, *, fps, size, frames, gop, quality, max_pixels,
          warnings: list[str]) -> _Plan:  # fmt: skip
    cfg, src = loaded.config, tokens.source
    for name, want in (("temporal_factor", cfg.temporal_factor), ("spatial_factor", cfg.spatial_factor),
                       ("model_bits", cfg.num_bits)):  # fmt: skip
        if tokens.factors.get(name, want) != want:
            raise LfqError(f"{src} records {name.replace('_', ' ')} {tokens.factors[name]}, but model "
                           f"{loaded.name!r} has {want}")  # fmt: skip
    if tokens.decoder_updates:
        raise LfqError(f"{src}: {tokens.decoder_updates} chunks of its .lfq file decode with a decoder update (preset "
                       "slow or veryslow), which token files do not hold; decode the .lfq file instead")  # fmt: skip
    if quality is not None:
        if quality not in cfg.quality_bits:
            raise LfqError(f"unknown quality {quality!r} (this model has {', '.join(cfg.quality_bits)})")
        if tokens.bits is not None and tokens.bits != cfg.quality_bits[quality]:
            raise LfqError(f"{src} holds {tokens.bits}-bit tokens, not quality {quality}'s {cfg.quality_bits[quality]}")
    bits = tokens.bits if tokens.bits is not None else cfg.quality_bits[quality] if quality else None
    if bits is None:
        raise LfqError(f"{src} does not record its bits per token: pass --quality ({', '.join(cfg.quality_bits)})")
    named = [q for q, b in cfg.quality_bits.items() if b == bits]
    if not named:
        raise LfqError(f"{src}: {bits} bits per token is none of model {loaded.name!r}'s qualities "
                       f"({', '.join(f'{q} {b}' for q, b in cfg.quality_bits.items())})")  # fmt: skip
    s = cfg.spatial_factor
    height, width = (size[1], size[0]) if size else (tokens.height, tokens.width)
    if height is None or width is None:
        height, width = tokens.shape[1] * s, tokens.shape[2] * s
        warnings.append(f"{src} records no frame size: decoding {width}x{height} frames (the whole grid; --size crops)")
    grid = (-(-height // s), -(-width // s))
    if tuple(tokens.shape[1:]) != grid:
        raise LfqError(f"{src}: indices are {'x'.join(map(str, tokens.shape))}, but {width}x{height} frames need "
                       f"T' x {grid[0]} x {grid[1]} (T' x ceil(H/{s}) x ceil(W/{s}))")  # fmt: skip
    if max_pixels and width * height > max_pixels:
        raise LfqError(f"frame size {width}x{height} exceeds --max-pixels {max_pixels} (0 = no limit)")
    rate = fps or tokens.fps
    if rate is None:
        what = "token format 1" if tokens.version == 1 else "no lfqcodec metadata"
        raise LfqError(f"{src} ({what}) does not record the exact frame rate: pass --fps (e.g. 24000/1001)")
    counts = _chunks(tokens, cfg.temporal_factor, frames, gop, warnings)
    gop_limit = _header_gop(tokens.gop, counts, cfg.temporal_factor)
    return _Plan(width, height, Fraction(rate), counts, bits, named[0], gop_limit)


def _chunks(tokens: TokenInput, f: int, frames: int | None, gop: int | None, warnings: list[str]) -> list[int]:
    """Each chunk's frame count: as recorded (format 2), else inferred (format 1: chunks of ``gop``
    frames but the last), else chunks of ``gop`` frames holding ``frames`` frames."""
    src, total = tokens.source, tokens.shape[0]
    gop = gop or tokens.gop or DEFAULT_GOP
    if gop < 1 or (gop - 1) % f:
        raise LfqError(f"--gop must be 1 + {f}k frames (e.g. 17, 33, 65), got {gop}")
    if tokens.chunk_frames is not None and frames is None:
        counts = list(tokens.chunk_frames)
        need = sum(latent_frames(c, f) for c in counts) if counts and min(counts) > 0 else -1
        if need != total:
            raise LfqError(f"{src}: {total} latent frames of indices, but its chunks of {'+'.join(map(str, counts))} "
                           f"frames hold {need}; pass --frames N to lay them out in chunks of --gop frames")  # fmt: skip
        return counts
    if tokens.chunk_starts is not None and frames is None:
        starts = list(tokens.chunk_starts) + [total]
        lengths = [b - a for a, b in zip(starts, starts[1:])]
        per = latent_frames(gop, f)
        if not lengths or min(lengths) < 1 or any(n != per for n in lengths[:-1]):
            raise LfqError(f"{src} (token format 1) has chunks of {'+'.join(map(str, lengths))} latent frames: "
                           f"scene-cut chunks, whose frame counts it does not record; export it again with lfqcodec "
                           f"tokens, or pass --frames N to lay it out in chunks of --gop frames")  # fmt: skip
        warnings.append(f"{src} is token format 1: chunks taken as {gop} frames each but the last")
        return chunk_layout(total, gop, f, tokens.frame_count)
    if frames is None and tokens.frame_count is None:
        warnings.append(f"{src} records no chunks: laid out in chunks of {gop} frames, the last as long as its "
                        "latent frames allow (--frames sets the total)")  # fmt: skip
    return chunk_layout(total, gop, f, frames if frames is not None else tokens.frame_count)


def _header_gop(recorded: int | None, counts: list[int], f: int) -> int:
    longest = max(counts)
    if recorded and recorded >= longest:
        return recorded
    return 1 + f * -(-(longest - 1) // f)


def detokenize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    shard: int | None = None,
    rows: str | None = None,
    clip: str | None = None,
    model: str | os.PathLike | None = None,
    fps: Fraction | None = None,
    size: tuple[int, int] | None = None,
    frames: int | None = None,
    gop: int | None = None,
    quality: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    window: int = DEFAULT_WINDOW,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_memory: int = DEFAULT_MAX_MEMORY,
    overwrite: bool = False,
    progress: bool = False,
    zstd_level: int = DEFAULT_ZSTD_LEVEL,
) -> DetokenizeReport:
    """Decode the tokens of ``src`` (``.npz``, or rows of a token dataset: ``shard``, ``rows``
    ``N``/``A-B``, ``clip``) to the video ``dst`` (``.mkv .mp4 .mov .y4m .png``, as ``decode``), or
    store them as the ``.lfq`` file ``dst`` (context-coded when the tokenizer's entropy model is
    installed). ``size`` is ``(width, height)``."""
    from ..io.videoio import check_output_format

    started = time.time()
    suffix = Path(dst).suffix.lower()
    if suffix != ".lfq":
        try:
            suffix = check_output_format(dst)
        except LfqError as exc:  # detokenize also writes .lfq
            raise LfqError(str(exc).replace("use one of ", "use .lfq or one of ")) from None
    dst = check_destination(dst, overwrite, (src,))
    warnings: list[str] = []
    tokens = read_token_input(src, shard, rows, clip)
    loaded = _model(tokens, model, warnings)
    plan = _plan(tokens, loaded, fps=fps, size=size, frames=frames, gop=gop, quality=quality, max_pixels=max_pixels,
                 warnings=warnings)  # fmt: skip
    total = sum(plan.chunk_frames)
    if suffix == ".lfq":
        with atomic_output(dst) as tmp:
            _write_lfq(tmp, tokens, loaded, plan, zstd_level)
        return DetokenizeReport(dst, total, time.time() - started, warnings)
    if suffix == ".png" and total != 1:
        raise LfqError(f"a .png output holds one frame but the tokens hold {total} (use a video extension)")
    budget = decoder_budget(max_memory, plan.width * plan.height, suffix)
    tok = Tokenizer.load(loaded, device, precision, quality=plan.quality, window=window, memory_budget=budget)
    decoded = (frame for block in tok.decode_stream(tokens.frames(), plan.chunk_frames, plan.height, plan.width)
               for frame in block)  # fmt: skip
    written = write_frames(dst, decoded, plan.width, plan.height, plan.fps, suffix, total, "detokenize", progress)
    return DetokenizeReport(dst, written, time.time() - started, warnings, tok.codec.mode.describe())


def _chunk_bits(tokens: TokenInput, plan: _Plan, f: int) -> Iterator[tuple[np.ndarray, int]]:
    """``(bits b x T' x h x w, frames)`` of each chunk, the indices checked as they are read."""
    source = tokens.frames()
    grid = tuple(tokens.shape[1:])
    with contextlib.closing(source):
        for count in plan.chunk_frames:
            latent = list(itertools.islice(source, latent_frames(count, f)))
            stacked = torch.from_numpy(np.stack([check_index_frame(np.asarray(x), plan.bits, grid) for x in latent]))
            yield indices_to_bits(stacked, plan.bits, dim=0).numpy(), count


def _write_lfq(path: Path, tokens: TokenInput, loaded: LoadedModel, plan: _Plan, zstd_level: int) -> None:
    from ..format.container import LfqWriter, StreamHeader
    from ..entropy.store import find_for_tokenizer

    cfg = loaded.config
    header = StreamHeader(
        model_id=loaded.model_id, width=plan.width, height=plan.height, frame_count=0, fps=plan.fps,
        time_base=1 / plan.fps, bits=plan.bits, model_bits=cfg.num_bits, temporal_factor=cfg.temporal_factor,
        spatial_factor=cfg.spatial_factor, gop=plan.gop, grid_height=tokens.shape[1], grid_width=tokens.shape[2],
        metadata={"model_name": loaded.name, "quality": plan.quality, "encoder": f"lfqcodec {__version__} detokenize"},
    )  # fmt: skip
    with open(path, "wb") as out:
        writer = LfqWriter(out, header, zstd_level, (2, 0), find_for_tokenizer(loaded.model_id, MODELS_DIR))
        for bits, count in _chunk_bits(tokens, plan, cfg.temporal_factor):
            writer.write_chunk(bits, count)
        writer.close()
