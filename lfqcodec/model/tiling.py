"""Spatially tiled, streamed decoding: peak memory bounded by a budget, not by the frame size.

The decoder is a stack of causal convolutions with per-position normalisation
(:mod:`lfqcodec.model.layers`), so an output pixel depends on latents within a fixed spatial radius
(:func:`probe_decoder`). A large frame is decoded tile by tile: each tile is the latents of its core
plus ``halo`` latents on every side that has a neighbour, and only the core of its output is kept.
That gives the pixels of the whole-frame decode (up to the summation order of the convolutions).

Streaming carries each causal convolution's last input frames from one window of latent frames to
the next (:func:`lfqcodec.model.layers.streaming`); with tiles, every tile has its own past. The pasts take
about 420-440 bytes per pixel of frame size for the shipped models (3.3 GiB at 4K UHD); when all tiles'
pasts do not fit the budget beside the work, they wait in an unlinked temporary file between windows
(read back with ``pread``, never memory-mapped: what is resident is the one tile at work).

Memory of a tiled window (:func:`plan_tiles`): the tile's activations, about ``ACTIVATION_BYTES`` per
tile pixel and output frame, the pasts (all tiles', or the one at work when they are spilled), and
the window's uint8 output frames. ``lfqcodec decode --max-memory`` is for the whole process:
:func:`decoder_budget` leaves the network what the process and the video writer do not take.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..base.errors import LfqError
from .layers import CausalConv3d, is_channels_last, streaming

# Peak bytes of decoder activations per tile pixel and decoded frame, beyond the carried pasts (fp32, 720p, heap
# limited as tiling does: 48 for v5, 58 for v6; 122-149 without limit_heap): `python benchmarks/tiling_constants.py
# activations --heap-limit`, results/tiling-constants.txt. Planning uses it, nothing depends on it exactly.
ACTIVATION_BYTES = 64
DEFAULT_MAX_MEMORY = 1800 << 20  # peak resident bytes of a decoding process (lfqcodec decode --max-memory)
PROCESS_BYTES = 400 << 20  # Python, torch and the model before any frame (368 MiB measured)
# What writing the frames takes, per pixel of frame size: PyAV's FFV1 and libx264 encoders at 4K UHD grow the peak by
# 758 / 647 MiB (96 / 82 B per pixel; `benchmarks/tiling_constants.py writer ffv1|libx264`); raw formats hold a frame or two
WRITER_BYTES_PER_PIXEL = {".mkv": 96, ".mp4": 96, ".mov": 96}
RAW_WRITER_BYTES_PER_PIXEL = 16
MIN_DECODER_BUDGET = 64 << 20
DEFAULT_MEMORY_BUDGET = DEFAULT_MAX_MEMORY - PROCESS_BYTES  # bytes the decoder's tensors may hold at once


def decoder_budget(max_memory: int, pixels: int, writer_suffix: str | None = None) -> int:
    """The decoder's share of ``max_memory`` bytes for the whole process (0 = no limit) with frames of
    ``pixels`` written as ``writer_suffix`` (None: frames returned to the caller)."""
    if not max_memory:
        return 0
    writer = 0 if writer_suffix is None else WRITER_BYTES_PER_PIXEL.get(writer_suffix, RAW_WRITER_BYTES_PER_PIXEL)
    budget = max_memory - PROCESS_BYTES - writer * pixels
    if budget < MIN_DECODER_BUDGET:
        need = (PROCESS_BYTES + writer * pixels + MIN_DECODER_BUDGET + (1 << 20) - 1) >> 20
        raise LfqError(f"--max-memory {max_memory >> 20} MiB is too little for frames of {pixels} pixels (at least "
                       f"{need}M)")  # fmt: skip
    return budget


def limit_heap() -> None:
    """Let glibc give freed tensors back at once (``mallopt(M_MMAP_THRESHOLD, 256 KiB)``): its adaptive
    threshold otherwise keeps tens of MB per freed tensor on the heap, and the peak doubles (122-149 against
    48-58 bytes per pixel and frame at 720p). It cost about 25 % of decoding speed (fresh pages each time;
    ``benchmarks/tiling_constants.py speed [--heap-limit]``), so only tiled decoding asks for it; elsewhere
    (not glibc) it does nothing."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).mallopt(-3, 256 << 10)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError, TypeError):
        pass


def causal_layers(module: nn.Module) -> list[CausalConv3d]:
    return [m for m in module.modules() if isinstance(m, CausalConv3d) and m.time_pad]


def probe_decoder(decoder: nn.Module) -> tuple[int, int]:
    """``(halo, state bytes per latent)`` of ``decoder``, from one streamed call on a 4 x 4 grid.

    The halo is the latents of context each side of a tile needs for exact output: the spatial
    receptive radius in latent units (a ``k x k`` convolution adds ``k // 2`` positions at its
    resolution), rounded up, plus one for the cell an output pixel lies in. The state is what the
    causal convolutions carry from one window to the next."""
    grid = 4
    radius: dict[int, float] = {}  # per layer: streamed, the refiner calls its layers once per frame

    def measure(layer: CausalConv3d, inputs: tuple[torch.Tensor, ...]) -> None:
        radius[id(layer)] = (layer.conv.kernel_size[-1] // 2) * grid / inputs[0].shape[-1]

    layers = [m for m in decoder.modules() if isinstance(m, CausalConv3d)]
    hooks = [layer.register_forward_pre_hook(measure) for layer in layers]
    param = next(decoder.parameters())
    try:
        with streaming(decoder), torch.no_grad():
            decoder(torch.zeros(1, decoder.inp.conv.in_channels, 1, grid, grid, dtype=param.dtype, device=param.device))
            state = sum(layer.past.numel() * layer.past.element_size() for layer in layers if layer.past is not None)
    finally:
        for hook in hooks:
            hook.remove()
    return math.ceil(sum(radius.values()) - 1e-9) + 1, state // grid**2


@dataclass(frozen=True)
class Tile:
    core: tuple[int, int, int, int]  # latent rows y0:y1, columns x0:x1 whose pixels this tile outputs
    padded: tuple[int, int, int, int]  # the latents it decodes: the core and its halo, inside the grid


@dataclass(frozen=True)
class TilePlan:
    grid: tuple[int, int]  # latent rows, columns
    tile: tuple[int, int]  # core size in latents (rows, columns)
    halo: int
    spill: bool  # keep the tiles' pasts in a temporary file between windows

    @property
    def tiles(self) -> list[Tile]:
        (gh, gw), (th, tw), halo = self.grid, self.tile, self.halo
        out = []
        for y0 in range(0, gh, th):
            for x0 in range(0, gw, tw):
                y1, x1 = min(gh, y0 + th), min(gw, x0 + tw)
                out.append(Tile((y0, y1, x0, x1), (max(0, y0 - halo), min(gh, y1 + halo), max(0, x0 - halo), min(gw, x1 + halo))))
        return out


def plan_tiles(grid: tuple[int, int], frames_per_window: int, spatial_factor: int, state_bytes_per_latent: int,
               halo: int, budget: int) -> TilePlan | None:  # fmt: skip
    """The tiling for a ``grid`` of latents that keeps the decoder's tensors within ``budget`` bytes
    with ``frames_per_window`` frames decoded per call, or ``None`` when the whole frame fits (the
    untiled path, unchanged). Largest tiles first, pasts kept in memory where they fit; the smallest
    tile core is ``halo`` latents (below that the halos' work dominates; half the grid on small
    grids), whatever the budget."""
    gh, gw = grid
    pixels_per_latent = spatial_factor**2
    output = gh * gw * pixels_per_latent * 3 * frames_per_window  # the window's uint8 frames
    work_per_latent = pixels_per_latent * ACTIVATION_BYTES * frames_per_window
    if output + gh * gw * (state_bytes_per_latent + work_per_latent) <= budget:
        return None
    sides = []
    side, smallest = max(gh, gw), max(1, min(halo, max(gh, gw) // 2))
    while side > smallest:
        side = max(smallest, int(side * 0.85))
        sides.append(side)
    fallback = None
    for spill in (False, True):
        for side in sides:
            rows, cols = -(-gh // side), -(-gw // side)  # tiles per column, per row; then even sizes
            plan = TilePlan(grid, (-(-gh // rows), -(-gw // cols)), halo, spill)
            areas = [(t.padded[1] - t.padded[0]) * (t.padded[3] - t.padded[2]) for t in plan.tiles]
            pasts = max(areas) if spill else sum(areas)
            if output + pasts * state_bytes_per_latent + max(areas) * work_per_latent <= budget:
                return plan
            fallback = plan
    return fallback


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """Values in [-1, 1] (any float dtype) -> uint8 ``round((v + 1) * 127.5)``, with one float32 copy."""
    work = video.to(torch.float32, copy=True)
    return work.clamp_(-1, 1).add_(1).mul_(127.5).round_().to(torch.uint8)


def describe_plan(plan: TilePlan | None) -> str:
    """One line for ``--verbose``."""
    if plan is None:
        return "whole frames"
    where = "a temporary file" if plan.spill else "memory"
    return (f"{len(plan.tiles)} tiles of up to {plan.tile[0]}x{plan.tile[1]} latents (halo {plan.halo}), "
            f"pasts in {where}")  # fmt: skip


class _PastStore:
    """Each tile's causal-convolution pasts between windows: tensors held in a dict, or bytes in an
    unlinked temporary file at fixed offsets. Only the tile at work holds its pasts in the layers."""

    def __init__(self, spill: bool):
        self.spill = spill
        self.tensors: dict[int, list[torch.Tensor | None]] = {}
        self.entries: dict[int, list[tuple]] = {}  # spilled: per past (offset, shape, dtype, channels-last, device)
        self.file = tempfile.TemporaryFile(prefix="lfqcodec-tiles-") if spill else None
        self.end = 0

    def keep(self, tile: int, layers: list[CausalConv3d]) -> None:
        """Take the layers' pasts for ``tile`` (the layers are left without)."""
        pasts = [layer.past for layer in layers]
        for layer in layers:
            layer.past = None
        if not self.spill:
            self.tensors[tile] = pasts
            return
        if tile not in self.entries:
            self.entries[tile] = []
            for past in pasts:
                self.entries[tile].append((self.end, past.shape, past.dtype, is_channels_last(past), past.device))
                self.end += past.numel() * past.element_size()
        for (offset, *_), past in zip(self.entries[tile], pasts):
            flat = _storage_order(past).reshape(-1).view(torch.uint8).cpu().numpy()
            if os.pwrite(self.file.fileno(), memoryview(flat), offset) != flat.size:
                raise OSError("short write to the decoder's temporary file")

    def restore(self, tile: int, layers: list[CausalConv3d]) -> None:
        """Give the layers ``tile``'s pasts (none before its first window); the store lets go of them."""
        if not self.spill:
            pasts = self.tensors.pop(tile, None) or [None] * len(layers)
            for layer, past in zip(layers, pasts):
                layer.past = past
            return
        for layer, entry in zip(layers, self.entries.get(tile) or [None] * len(layers)):
            layer.past = None if entry is None else self._read(*entry)

    def _read(self, offset: int, shape: torch.Size, dtype: torch.dtype, channels_last: bool, device) -> torch.Tensor:
        n, c, t, h, w = shape
        buffer = torch.empty((n, t, h, w, c) if channels_last else (n, c, t, h, w), dtype=dtype)
        raw = buffer.view(-1).view(torch.uint8).numpy()
        if os.preadv(self.file.fileno(), [memoryview(raw)], offset) != raw.size:
            raise OSError("short read from the decoder's temporary file")
        return (buffer.permute(0, 4, 1, 2, 3) if channels_last else buffer).to(device)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.tensors.clear()


def _storage_order(x: torch.Tensor) -> torch.Tensor:
    """``x`` viewed in its memory order (contiguous): N, T, H, W, C when channels-last."""
    return x.permute(0, 2, 3, 4, 1) if is_channels_last(x) else x.contiguous()


class TiledDecoding:
    """One chunk's streamed decode, tile by tile (use inside :func:`lfqcodec.model.layers.streaming`)."""

    def __init__(self, decoder: nn.Module, plan: TilePlan, spatial_factor: int):
        self.decoder = decoder
        self.plan = plan
        self.tiles = plan.tiles
        self.factor = spatial_factor
        self.layers = causal_layers(decoder)
        self.store = _PastStore(plan.spill)
        limit_heap()

    def decode(self, codes: torch.Tensor, first: bool, height: int, width: int, run) -> np.ndarray:
        """``codes`` ``1 x B x T' x gh x gw`` -> uint8 frames ``T x height x width x 3``; ``run(codes_tile,
        first)`` is the decoder call (``lfqcodec.model.inference.decode_bits`` on codes)."""
        s = self.factor
        out: np.ndarray | None = None
        for index, tile in enumerate(self.tiles):
            self.store.restore(index, self.layers)
            py0, py1, px0, px1 = tile.padded
            video = run(codes[..., py0:py1, px0:px1], first)
            self.store.keep(index, self.layers)
            y0, y1, x0, x1 = tile.core
            top, left = (y0 - py0) * s, (x0 - px0) * s
            rows, cols = min(y1 * s, height) - y0 * s, min(x1 * s, width) - x0 * s
            if rows <= 0 or cols <= 0:
                continue
            pixels = to_uint8(video[0, :, :, top : top + rows, left : left + cols]).permute(1, 2, 3, 0).cpu().numpy()
            if out is None:
                out = np.empty((pixels.shape[0], height, width, 3), dtype=np.uint8)
            out[:, y0 * s : y0 * s + rows, x0 * s : x0 * s + cols] = pixels
            del video
        assert out is not None
        return out

    def close(self) -> None:
        self.store.close()
