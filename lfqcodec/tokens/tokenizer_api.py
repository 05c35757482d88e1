"""Tokens in memory, both ways: :class:`Tokenizer` turns frames into token indices and back.

>>> import lfqcodec
>>> tok = lfqcodec.Tokenizer.load()                      # lfq-base, CUDA when present, quality "medium"
>>> indices = tok.encode(frames)                         # uint8 T x H x W x 3 -> int64 T' x ceil(H/8) x ceil(W/8)
>>> indices[1:, :4, :4] = 0                              # edit a region of every later latent frame
>>> back = tok.decode(indices, size=frames.shape[1:3])   # -> uint8 T x H x W x 3

It is a thin layer over :class:`lfqcodec.codec.chunks.Codec`: the same chunking as ``.lfq`` files (chunks of
``gop`` frames, the first frame of each its own latent frame, later frames ``temporal_factor`` at a
time, a short last group padded by repeating its last frame), the same network calls and the same
bit order (bit ``i`` of an index = latent channel ``i``, LSB first), so ``encode`` gives the indices
``lfqcodec tokens`` exports from ``lfqcodec encode`` of the same frames, and ``decode`` the frames
``lfqcodec decode`` gives, with the same device, precision and window. A token keeps the first
``bits`` bits of the model's, ``bits`` being the quality's entry of the model's ``quality_bits``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..codec.chunks import DEFAULT_GOP, DEFAULT_WINDOW, Codec, encode_chunks
from ..model.checkpoint import LoadedModel, load_model
from ..model.device import select_device
from ..base.errors import LfqError
from ..model.quantizer import bits_to_indices, indices_to_bits
from ..model.tiling import DEFAULT_MEMORY_BUDGET
from ..model.tokenizer import latent_frames

__all__ = ["TokenClip", "Tokenizer", "check_index_frame", "chunk_layout"]


class TokenClip(NamedTuple):
    """Token indices with what decoding them exactly needs (:meth:`Tokenizer.encode_clip`)."""

    indices: np.ndarray | torch.Tensor  # int64 T' x h x w (numpy) or B x T' x h x w (torch)
    chunk_frames: tuple[int, ...]  # frames of each independently coded chunk, in order
    height: int  # frame size in pixels (the grid is ceil(height / s) x ceil(width / s))
    width: int


def chunk_layout(latent_total: int, gop: int, temporal_factor: int, frames: int | None = None) -> list[int]:
    """Frame counts of the chunks that ``latent_total`` latent frames hold when coded in chunks of
    ``gop`` frames without scene cuts: full chunks, then a shorter last one. ``frames`` (the total)
    fixes the last chunk's count; without it the last chunk is as long as its latent frames allow."""
    if latent_total < 1:
        raise LfqError("no latent frames to decode")
    per = latent_frames(gop, temporal_factor)
    full, rest = divmod(latent_total, per)
    counts = [gop] * full + ([1 + temporal_factor * (rest - 1)] if rest else [])
    if frames is not None:
        last = latent_total - per * (len(counts) - 1)
        lo = 1 if last == 1 else temporal_factor * (last - 2) + 2
        before = sum(counts[:-1])
        if not before + lo <= frames <= sum(counts):
            raise LfqError(f"{frames} frames do not fit {latent_total} latent frames in chunks of {gop} frames "
                           f"(they hold {before + lo}..{sum(counts)})")  # fmt: skip
        counts[-1] = frames - before
    return counts


def check_index_frame(frame: np.ndarray, bits: int, grid: tuple[int, int], what: str = "indices") -> np.ndarray:
    """One latent frame of indices (``h x w``, any integer type) as int64, refused in one line when
    it is not integers, has the wrong grid or holds values outside ``[0, 2^bits)``."""
    if frame.dtype.kind not in "iu":
        raise LfqError(f"{what} are {frame.dtype}, not integers (token indices are integers in [0, 2^{bits}))")
    if tuple(frame.shape) != tuple(grid):
        raise LfqError(f"{what} have a {'x'.join(map(str, frame.shape))} grid, expected {grid[0]}x{grid[1]}")
    if frame.size and (frame.min() < 0 or frame.max() >= 1 << bits):
        bad = frame.min() if frame.min() < 0 else frame.max()
        raise LfqError(f"{what} hold {bad}, outside [0, 2^{bits}) for {bits}-bit tokens")
    return frame.astype(np.int64)  # a copy: frames read from files are read-only


class Tokenizer:
    """A loaded model on a device that encodes frames into token indices and decodes them back.

    ``quality`` picks the bits kept per token (``config.quality_bits[quality]``)."""

    def __init__(self, codec: Codec, quality: str = "medium"):
        cfg = codec.cfg
        if quality not in cfg.quality_bits:
            raise LfqError(f"unknown quality {quality!r} (this model has {', '.join(cfg.quality_bits)})")
        self.codec = codec
        self.quality = quality

    @classmethod
    def load(cls, model: str | os.PathLike | LoadedModel | None = None, device: str = "auto", precision: str = "auto",
             *, quality: str = "medium", window: int = DEFAULT_WINDOW,
             memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Tokenizer:  # fmt: skip
        """Load ``model`` (name in ``models/``, a ``.safetensors`` path, or a loaded model; None:
        lfq-base) once. ``device``: auto (CUDA when present), cpu or cuda; ``precision``: see
        :mod:`lfqcodec.model.inference`; ``window``: latent frames per network step (memory, never the
        tokens); ``memory_budget``: bytes for the decoder's tensors (:mod:`lfqcodec.model.tiling`)."""
        loaded = model if isinstance(model, LoadedModel) else load_model(model)
        return cls(Codec(loaded, select_device(device), window, precision, memory_budget), quality)

    @property
    def model(self) -> LoadedModel:
        return self.codec.model

    @property
    def device(self) -> torch.device:
        return self.codec.device

    @property
    def bits(self) -> int:
        """Bits per token at this quality (indices are in ``[0, 2^bits)``)."""
        return self.codec.cfg.quality_bits[self.quality]

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The token grid of ``height x width`` frames."""
        s = self.codec.cfg.spatial_factor
        return -(-height // s), -(-width // s)

    def _check_gop(self, gop: int) -> None:
        f = self.codec.cfg.temporal_factor
        if gop < 1 or (gop - 1) % f:
            raise LfqError(f"gop must be 1 + {f}k frames (e.g. 17, 33, 65), got {gop}")

    # --- encoding -------------------------------------------------------------------------------
    def encode(self, frames: np.ndarray | torch.Tensor, *, gop: int = DEFAULT_GOP, scenecut: float = 0.0):
        """Frames -> token indices: numpy uint8 ``T x H x W x 3`` -> int64 ``T' x ceil(H/s) x
        ceil(W/s)``; torch float ``B x 3 x T x H x W`` in [-1, 1] -> int64 ``B x T' x h x w`` on
        this tokenizer's device. Chunks of ``gop`` frames; ``scenecut`` > 0 also starts one at each
        scene cut (numpy frames only; then :meth:`encode_clip` says where the chunks are)."""
        return self.encode_clip(frames, gop=gop, scenecut=scenecut).indices

    def encode_clip(self, frames: np.ndarray | torch.Tensor, *, gop: int = DEFAULT_GOP,
                    scenecut: float = 0.0) -> TokenClip:  # fmt: skip
        """As :meth:`encode`, with the chunks' frame counts and the frame size (what
        :meth:`decode` needs to give back exactly these frames)."""
        self._check_gop(gop)
        if scenecut < 0:
            raise LfqError(f"scenecut must be >= 0, got {scenecut}")
        if isinstance(frames, torch.Tensor):
            return self._encode_batch(frames, gop, scenecut)
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not frames.shape[0]:
            raise LfqError(f"frames must be uint8 T x H x W x 3 with T >= 1, got {frames.dtype} "
                           f"{'x'.join(map(str, frames.shape))}")  # fmt: skip
        height, width = frames.shape[1:3]
        parts, counts = [], []
        for chunk in encode_chunks(self.codec, iter(frames), width, height, gop, self.bits, scenecut):
            parts.append(bits_to_indices(torch.from_numpy(np.ascontiguousarray(chunk.bits[: self.bits])), dim=0))
            counts.append(chunk.frames)
        return TokenClip(torch.cat(parts).numpy(), tuple(counts), height, width)

    def _encode_batch(self, video: torch.Tensor, gop: int, scenecut: float) -> TokenClip:
        if video.ndim != 5 or video.shape[1] != 3 or not video.shape[2] or not video.is_floating_point():
            raise LfqError(f"a torch batch must be float B x 3 x T x H x W in [-1, 1], got {video.dtype} "
                           f"{'x'.join(map(str, video.shape))}")  # fmt: skip
        if scenecut:
            raise LfqError("scene cuts are detected on uint8 frames: pass a numpy array, or scenecut=0")
        if not torch.isfinite(video).all():
            raise LfqError("frames hold NaN or infinite values")
        grid = self.grid(*video.shape[-2:])
        out, counts = [], []
        for clip in video:
            frames, parts, counts = iter(clip.unbind(1)), [], []
            while True:
                chunk = self.codec.encode_chunk(frames, gop, grid)
                if not chunk.frames:
                    break
                parts.append(bits_to_indices(torch.from_numpy(np.ascontiguousarray(chunk.bits[: self.bits])), dim=0))
                counts.append(chunk.frames)
            out.append(torch.cat(parts))
        return TokenClip(torch.stack(out).to(self.device), tuple(counts), *video.shape[-2:])

    # --- decoding -------------------------------------------------------------------------------
    def decode(self, indices: np.ndarray | torch.Tensor | TokenClip, *, chunk_frames: Sequence[int] | None = None,
               frames: int | None = None, gop: int = DEFAULT_GOP, size: tuple[int, int] | None = None):  # fmt: skip
        """Token indices -> frames: numpy ``T' x h x w`` -> uint8 ``T x H x W x 3``; torch
        ``B x T' x h x w`` -> float ``B x 3 x T x H x W`` in [-1, 1] on this tokenizer's device (the
        same pixels, ``p / 127.5 - 1``). A :class:`TokenClip` carries its chunks and size. Otherwise
        ``chunk_frames`` gives the chunks' frame counts, or they are chunks of ``gop`` frames
        (:func:`chunk_layout`; ``frames``: the total, default as many as the last chunk holds);
        ``size`` = ``(H, W)`` crops (default: the whole grid)."""
        if isinstance(indices, TokenClip):
            indices, chunk_frames, size = indices.indices, indices.chunk_frames, (indices.height, indices.width)
        if isinstance(indices, torch.Tensor):
            if indices.ndim != 4:
                shape = "x".join(map(str, indices.shape))
                raise LfqError(f"a torch batch of indices must be B x T' x h x w, got {shape}")
            clips = [self.decode(clip.cpu().numpy(), chunk_frames=chunk_frames, frames=frames, gop=gop, size=size)
                     for clip in indices]  # fmt: skip
            video = torch.from_numpy(np.stack(clips)).to(self.device).permute(0, 4, 1, 2, 3)
            return video.float() / 127.5 - 1
        indices = np.asarray(indices)
        if indices.ndim != 3 or not indices.size:
            raise LfqError(f"indices must be a non-empty T' x h x w array, got {'x'.join(map(str, indices.shape))}")
        height, width = size or tuple(g * self.codec.cfg.spatial_factor for g in indices.shape[1:])
        grid = self.grid(height, width)
        if tuple(indices.shape[1:]) != grid:
            raise LfqError(f"indices have a {indices.shape[1]}x{indices.shape[2]} grid, but {width}x{height} frames "
                           f"need {grid[0]}x{grid[1]}")  # fmt: skip
        counts = self.layout(len(indices), chunk_frames, frames, gop)
        return np.concatenate(list(self.decode_stream(iter(indices), counts, height, width)))

    def layout(self, latent_total: int, chunk_frames: Sequence[int] | None, frames: int | None = None,
               gop: int = DEFAULT_GOP) -> list[int]:  # fmt: skip
        """The chunks' frame counts for ``latent_total`` latent frames, checked (see :meth:`decode`)."""
        f = self.codec.cfg.temporal_factor
        if chunk_frames is None:
            self._check_gop(gop)
            return chunk_layout(latent_total, gop, f, frames)
        counts = [int(c) for c in chunk_frames]
        if not counts or min(counts) < 1:
            raise LfqError("chunk frame counts must be >= 1")
        need = sum(latent_frames(c, f) for c in counts)
        if need != latent_total:
            raise LfqError(f"{latent_total} latent frames of indices, but chunks of {'+'.join(map(str, counts))} "
                           f"frames hold {need}")  # fmt: skip
        return counts

    def decode_stream(self, indices: Iterable[np.ndarray], chunk_frames: Sequence[int], height: int, width: int,
                      bits: int | None = None) -> Iterator[np.ndarray]:  # fmt: skip
        """Decode latent frames of indices (``h x w`` each, in order, checked as they come) chunk by
        chunk, yielding uint8 frames a window at a time; memory is a window, whatever the length.
        ``bits``: bits per token (default: this quality's; must be one of the model's qualities)."""
        bits = bits or self.bits
        if bits not in self.codec.cfg.quality_bits.values():
            raise LfqError(f"{bits} bits per token is none of model {self.model.name!r}'s qualities "
                           f"({', '.join(f'{q} {b}' for q, b in self.codec.cfg.quality_bits.items())})")  # fmt: skip
        grid, f = self.grid(height, width), self.codec.cfg.temporal_factor
        source = iter(indices)

        def latent(count: int) -> Iterator[np.ndarray]:
            for _ in range(latent_frames(count, f)):
                frame = next(source, None)
                if frame is None:
                    raise LfqError("the indices end before the chunks they are said to hold")
                frame = torch.from_numpy(check_index_frame(np.asarray(frame), bits, grid))
                yield indices_to_bits(frame, bits, dim=0).numpy()

        self.codec.use_update(None)
        for count in chunk_frames:
            with contextlib.closing(self.codec.decode_chunk(latent(count), count, height, width)) as blocks:
                yield from blocks
