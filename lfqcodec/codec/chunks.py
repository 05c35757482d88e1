"""The chunk-level codec: a loaded model on a device that turns the frames of one chunk into its bits and back.

:class:`Codec` holds the steps (``encode_chunk``, ``decode_chunk``); :func:`encode_chunks` cuts a stream of frames
into chunks (at ``gop`` frames and at scene cuts) and encodes them one after the other. The file-level functions
(``lfqcodec.api``), the presets, tokenizing and calibration all run a chunk through here.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..base.errors import LfqError
from ..model.checkpoint import MODELS_DIR, LoadedModel
from ..model.inference import choose_mode, decode_bits, encode_latents, prepare_tokenizer
from ..model.int8 import find_calibration
from ..model.layers import streaming
from ..model.tiling import DEFAULT_MEMORY_BUDGET, TiledDecoding, TilePlan, plan_tiles, probe_decoder, to_uint8
from .adapt import UpdateState
from .scenecut import DEFAULT_THRESHOLD as DEFAULT_SCENECUT
from .scenecut import ChunkSplitter
from .search import SearchConfig, search_bits

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
        self.memory_budget = memory_budget  # bytes for the decoder's tensors (lfqcodec.model.tiling); 0 = no tiling
        self._probe: tuple[int, int] | None = None  # (halo, state bytes per latent) of the decoder
        self.device = device
        self.window = max(1, window)
        folders = (MODELS_DIR, model.path.parent if model.path else None)
        int8_ranges = find_calibration(model.model_id, *folders) if device.type == "cpu" else None
        self.mode = choose_mode(precision, device, int8_ranges is not None)  # precision and layout (lfqcodec.model.inference)
        self.tokenizer = prepare_tokenizer(model.tokenizer.to(device), self.mode, int8_ranges)
        # the encoder's mode: the same, except where auto runs only the encoder in int8 (AVX2)
        self.encode_mode = choose_mode(precision, device, int8_ranges is not None, encoding=True)
        self.encoder = self.tokenizer
        if self.encode_mode != self.mode:
            self.encoder = prepare_tokenizer(model.tokenizer, self.encode_mode, int8_ranges)
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
        ``keep_bits`` bits are then searched against the decoder (:mod:`lfqcodec.codec.search`), given
        ``previous_error`` (the last chunk's ``last_error``, when this chunk continues its scene)."""
        f, s = self.cfg.temporal_factor, self.cfg.spatial_factor
        keep_bits = keep_bits or self.cfg.num_bits
        first = next(frames, None)
        if first is None:
            return EncodedChunk(np.zeros((self.cfg.num_bits, 0, *grid), dtype=bool), 0)
        searching = search is not None and search.steps > 0
        inputs, latents, count = [], [], 1
        with streaming(self.encoder), torch.no_grad():
            inputs.append(_to_model([first], grid, s, self.device))
            latents.append(encode_latents(self.encoder, inputs[-1], True, self.encode_mode))
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
                latents.append(encode_latents(self.encoder, inputs[-1], False, self.encode_mode))
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
        """Apply the decoder update (record number, payload; :mod:`lfqcodec.codec.adapt`) for the next
        chunks; ``None``: the shipped decoder. A payload that does not parse raises FormatError."""
        if self._updates is None:
            self._updates = UpdateState(self.tokenizer.decoder)
        self._updates.use(*(update or (None, None)))


def _progress(total: int | None, desc: str, enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total or None, desc=desc, unit="frame", leave=False, dynamic_ncols=True)


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
