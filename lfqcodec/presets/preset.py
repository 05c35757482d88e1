"""Encoder presets (x265's names and meaning: slower buys better pictures at the same rate).

- ``fast``: the encoder network over ``FAST_WINDOW`` latent frames per step and zstd level 9.
- ``medium`` (default): today's encoder, nothing searched or fitted.
- ``slow`` / ``veryslow``: per run of chunks (at most ``run_frames`` frames), a decoder update
  (:mod:`lfqcodec.codec.adapt`) is fitted on the run's frames and kept when it pays on the encoder's bits;
  then the bits of each chunk are searched once (:mod:`lfqcodec.codec.search`, rate-aware with the file's
  context model) against the decoder as chosen: its best bits are kept where they pay, else each
  tile's best trade at the slope below where those pay (a search on a cheap rate term can overshoot);
  a kept update is stored before the run's chunks unless the searched bits do better without it.

Every choice a slow preset makes is a rate-distortion decision: a chunk's searched bits replace the
encoder's, and an update is sent, only where the PSNR gained pays for the bytes added at the slope of
``DB_PER_DOUBLING`` dB per doubling of the rate (:func:`pays`), measured on the decoded pictures and
the bytes the writer will store. So a clip is never coded worse than ``medium`` on that scale: where
nothing pays, the file holds ``medium``'s bits and no update.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..codec.adapt import DecoderUpdate, UpdateSpec, applied
from .adapt_fit import ChunkTarget, FitConfig, fit_update
from ..format.bitpack import compressed_size
from ..model.layers import streaming
from ..model.quantizer import decoder_codes
from ..codec.chunks import _to_model
from ..codec.search import SearchConfig, search_candidates, tiles_of

DB_PER_DOUBLING = 6.02  # rate-distortion slope a change must beat (a typical codec's: 6 dB per doubling)
FAST_WINDOW = 4


@dataclass(frozen=True)
class Preset:
    name: str
    window: int | None = None  # latent frames per encoder step (None: the caller's)
    zstd_level: int | None = None  # None: the caller's
    search_steps: int = 0  # bit search steps per tile, per chunk
    search_rate: float = 0.0  # weight of the search's rate term (lfqcodec.codec.search: the context model's code
    # length; none for zstd-only files); 0: the chunk-level check alone decides
    fit: FitConfig | None = None  # decoder update fitting (None: no update)
    spec: UpdateSpec = field(default_factory=lambda: UPDATE_SPEC)
    run_frames: int = 66  # frames one update covers at most: whole chunks (two of the default 33 frames),
    # never across a scene cut; a long video re-fits every run


# The update's design, chosen by measurement (benchmarks/results/update/): norm scales and shifts and
# convolution biases of the decoder, 4-bit values, Adam at 1e-2 (best net gain of five designs on bikes).
UPDATE_SPEC = UpdateSpec(norms=True, biases=True, lora_rank=0, refiner=False, bits=4)
UPDATE_LR = 1e-2
# The search's rate weight, chosen on armwrestling's first chunk (256x256, v6, coder 2; 20 steps;
# benchmarks/results/update/search_rate_probe-armwrestling-256-rate.json): weight 0 gained 1.23 dB for
# +29 % bytes, 0.25 gained 1.09 dB for -2 %, 0.5 0.87 dB for -9 %, 1 0.44 dB for -14 %.
SEARCH_RATE = 0.25

PRESETS: dict[str, Preset] = {
    "fast": Preset("fast", window=FAST_WINDOW, zstd_level=9),
    "medium": Preset("medium"),
    "slow": Preset("slow", search_steps=8, search_rate=SEARCH_RATE, fit=FitConfig(steps=50, lr=UPDATE_LR)),
    "veryslow": Preset("veryslow", search_steps=20, search_rate=SEARCH_RATE, fit=FitConfig(steps=150, lr=UPDATE_LR)),
}


def margin(psnr_gain_db: float, bytes_before: int, bytes_after: int, slope: float = DB_PER_DOUBLING) -> float:
    """``gain - slope * log2(after / before)``: what a change that gains ``psnr_gain_db`` for
    ``bytes_before -> bytes_after`` earns beyond its bytes' price (dB)."""
    return psnr_gain_db - slope * math.log2(max(bytes_after, 1) / max(bytes_before, 1))


def pays(psnr_gain_db: float, bytes_before: int, bytes_after: int, slope: float = DB_PER_DOUBLING) -> bool:
    """Whether a change that gains ``psnr_gain_db`` for ``bytes_before -> bytes_after`` is worth it:
    a positive :func:`margin` (a change that saves bytes pays unless it loses more)."""
    return margin(psnr_gain_db, bytes_before, bytes_after, slope) > 0


def psnr_of(mse: float) -> float:
    """PSNR (dB) of an MSE measured on 0..255 pixels."""
    return 10 * math.log10(255**2 / max(mse, 1e-10))


@dataclass
class RunChunk:
    """One chunk of a run, as the encoder sees it: source frames, model input, encoder latents."""

    frames: list[np.ndarray]  # the chunk's source frames (H x W x 3 uint8)
    video: torch.Tensor  # 1 x 3 x T x H' x W' in [-1, 1], padded to 1 + f*k frames and the grid
    latents: torch.Tensor  # 1 x B x T' x h x w
    bits: np.ndarray | None = None  # chosen bits (B x T' x h x w bool)


@dataclass
class _Decoded:
    """A chunk decoded from some bits: its MSE (0..255) and the error of its last frame (decoded minus
    source, model scale; the next chunk's flicker term)."""

    mse: float
    last_error: torch.Tensor


@dataclass
class _Outcome:
    """One way of coding a run's chunks: their bits, each chunk decoded, each chunk's payload bytes,
    the update's bytes (0: none) and how many chunks hold searched bits."""

    bits: list[np.ndarray]
    decoded: list[_Decoded]
    chunk_bytes: list[int]
    update_bytes: int = 0
    searched: int = 0

    @property
    def bytes(self) -> int:
        return sum(self.chunk_bytes) + self.update_bytes

    @property
    def mse(self) -> float:
        return float(np.mean([d.mse for d in self.decoded]))

    @property
    def psnr(self) -> float:
        return psnr_of(self.mse)


@dataclass
class RunResult:
    update: DecoderUpdate | None
    payload: bytes | None  # the update as stored (None: no update sent)
    chunks: list[RunChunk]
    stats: dict = field(default_factory=dict)  # what was decided and measured
    last_error: torch.Tensor | None = None  # decoded - source of the run's last frame (searched runs)


class RunEncoder:
    """Encodes runs of chunks with a slow preset on a :class:`~lfqcodec.codec.chunks.Codec`."""

    def __init__(self, codec, grid: tuple[int, int], keep: int, preset: Preset, zstd_level: int,
                 entropy_model=None, tick: Callable[[int], None] | None = None):  # fmt: skip
        """``zstd_level`` and ``entropy_model`` (the file's context model, None for zstd only) are
        the writer's: rate decisions are made on the bytes the file will hold."""
        self.codec, self.grid, self.keep, self.preset = codec, grid, keep, preset
        self.zstd_level, self.entropy_model = zstd_level, entropy_model
        self.tick = tick or (lambda units: None)
        self.decoder = codec.tokenizer.decoder

    @property
    def search_tiles(self) -> int:
        """Tiles the search visits in each chunk (:func:`lfqcodec.codec.search.tiles_of`)."""
        return tiles_of(self.grid, SearchConfig().tile)

    def work_units(self, frames: int, chunks: int) -> int:
        """Progress units for a run: fit steps + search steps x tiles x chunks + frames (a fitting
        step and a search step on one tile cost about the same)."""
        fit = self.preset.fit.steps if self.preset.fit else 0
        return fit + self.preset.search_steps * self.search_tiles * chunks + frames

    def prepare(self, frames: list[np.ndarray]) -> RunChunk:
        """Model input and encoder latents of one chunk's frames (streamed ``window`` at a time)."""
        codec, f, s = self.codec, self.codec.cfg.temporal_factor, self.codec.cfg.spatial_factor
        padded = frames + [frames[-1]] * (-(len(frames) - 1) % f)
        video = _to_model(padded, self.grid, s, codec.device)
        step = f * codec.window
        with streaming(codec.tokenizer), torch.no_grad():
            latents = [codec.tokenizer.encoder(video[:, :, :1].to(codec.dtype), first=True)]
            for lo in range(1, video.shape[2], step):
                latents.append(codec.tokenizer.encoder(video[:, :, lo : lo + step].to(codec.dtype), first=False))
        return RunChunk(frames, video, torch.cat(latents, dim=2))

    def _decoded(self, chunk: RunChunk, bits: np.ndarray) -> _Decoded:
        """``chunk`` decoded from ``bits`` by the decoder as it is now."""
        h, w = chunk.frames[0].shape[:2]
        total, count, last = 0.0, 0, None
        at = 0
        for block in self.codec.decode_chunk(bits[: self.keep], len(chunk.frames), h, w):
            source = np.stack(chunk.frames[at : at + len(block)]).astype(np.float32)
            total += float(((block.astype(np.float32) - source) ** 2).sum())
            count += source.size
            at += len(block)
            last = block[-1] if len(block) else last
        n = len(chunk.frames)
        decoded_last = _to_model([last], self.grid, self.codec.cfg.spatial_factor, self.codec.device)
        return _Decoded(total / max(count, 1), decoded_last - chunk.video[:, :, n - 1 : n])

    def _mse(self, chunk: RunChunk, bits: np.ndarray) -> float:
        """MSE (0..255) of ``chunk`` decoded from ``bits`` against its source."""
        return self._decoded(chunk, bits).mse

    def _bytes(self, bits: np.ndarray) -> int:
        """Payload bytes of a chunk's kept bits, chosen as the writer chooses (the smaller coding)."""
        size = compressed_size(bits[: self.keep], self.zstd_level)
        if self.entropy_model is not None:
            from ..entropy.coder import encode_bits

            size = min(size, len(encode_bits(np.ascontiguousarray(bits[: self.keep]), self.entropy_model)))
        return size

    def _outcome(self, chunks: list[RunChunk], bits: list[np.ndarray], chunk_bytes: list[int] | None = None,
                 update_bytes: int = 0) -> _Outcome:  # fmt: skip
        """``bits`` decoded by the decoder as it is now, and their bytes (``chunk_bytes`` where known)."""
        decoded = [self._decoded(c, b) for c, b in zip(chunks, bits)]
        return _Outcome(bits, decoded, chunk_bytes or [self._bytes(b) for b in bits], update_bytes)

    def encode(self, chunks: list[RunChunk], previous_error: torch.Tensor | None = None) -> RunResult:
        """Choose the update and each chunk's bits for one run (see the module docstring): the update
        is fitted on the encoder's bits and kept where its gain pays for its bytes; the chunks are
        then searched once, against the decoder as chosen, and a kept update is dropped again when
        the searched bits without it are the better trade."""
        preset, stats = self.preset, {"frames": sum(len(c.frames) for c in chunks)}
        base = [self.codec.tokenizer.quantizer.token_bits(c.latents)[0].cpu().numpy() for c in chunks]
        start = plain = self._outcome(chunks, base)
        stats.update(base_bytes=start.bytes, base_psnr=start.psnr)
        update, payload = None, None
        if preset.fit is not None and preset.fit.steps > 0:
            targets = [ChunkTarget(self._codes(b), c.video) for c, b in zip(chunks, base)]
            fitted = fit_update(self.decoder, targets, preset.spec, preset.fit, lambda *_: self.tick(1))
            data = fitted.to_bytes()
            fitted = DecoderUpdate.from_bytes(data, self.decoder)  # exactly what the decoder will use
            with applied(self.decoder, fitted):
                fit = self._outcome(chunks, base, start.chunk_bytes, len(data))
            stats.update(update_bytes=len(data), update_gain_db=fit.psnr - start.psnr)
            if pays(fit.psnr - start.psnr, start.bytes, fit.bytes):
                start, update, payload = fit, fitted, data
        with applied(self.decoder, update):
            best = self._choose(chunks, start, previous_error)
        if update is not None and best.searched:  # the searched bits without the update: still worth its bytes?
            decoded = [before if b is old else self._decoded(c, b)  # chunks not searched: decoded already
                       for c, b, old, before in zip(chunks, best.bits, plain.bits, plain.decoded)]
            without = _Outcome(best.bits, decoded, best.chunk_bytes, 0, best.searched)
            if not pays(best.psnr - without.psnr, without.bytes, best.bytes):  # and never below medium's bits
                best = without if pays(without.psnr - plain.psnr, plain.bytes, without.bytes) else plain
                update, payload = None, None
        for chunk, bits in zip(chunks, best.bits):
            chunk.bits = bits
            self.tick(len(chunk.frames))
        stats.update(update_sent=payload is not None, searched_chunks=best.searched, bytes=best.bytes)
        return RunResult(update, payload, chunks, stats, best.decoded[-1].last_error)

    def _choose(self, chunks: list[RunChunk], start: _Outcome, previous_error: torch.Tensor | None) -> _Outcome:
        """Each chunk's bits with the decoder as it is now, from ``start`` (the encoder's bits decoded
        with it): the searched bits where they pay, else the encoder's."""
        if self.preset.search_steps <= 0:
            return start
        result = _Outcome([], [], [], start.update_bytes)
        for chunk, old, before, size in zip(chunks, start.bits, start.decoded, start.chunk_bytes):
            new, after, new_size = self._search(chunk, old, before, size, previous_error)
            previous_error = after.last_error
            result.bits.append(new)
            result.decoded.append(after)
            result.chunk_bytes.append(new_size)
            result.searched += int(new is not old)
        return result

    def _codes(self, bits: np.ndarray) -> torch.Tensor:
        cfg = self.codec.cfg
        codes = decoder_codes(torch.from_numpy(bits[: self.keep]).to(self.codec.device)[None], cfg.num_bits, cfg.residual_bits)
        return codes.to(self.codec.dtype)

    def _search(self, chunk: RunChunk, bits: np.ndarray, before: _Decoded, size: int,
                previous_error: torch.Tensor | None) -> tuple[np.ndarray, _Decoded, int]:  # fmt: skip
        """The first searched candidate (:func:`~lfqcodec.codec.search.search_candidates`: the search's best,
        then each tile's best trade) that pays for its bytes, else ``bits`` (decoded as ``before``,
        ``size`` bytes); also how the chosen bits decode and their bytes."""
        rate = self.preset.search_rate if self.entropy_model is not None else 0.0  # zstd only: no rate model
        cfg = SearchConfig(steps=self.preset.search_steps, rate_weight=rate, rate_model=self.entropy_model,
                           trade_db_per_doubling=DB_PER_DOUBLING)  # fmt: skip
        searched = search_candidates(self.codec.tokenizer, chunk.video, chunk.latents, self.keep, cfg, previous_error,
                                     on_tile=lambda: self.tick(self.preset.search_steps))  # fmt: skip
        for found in searched:
            found = found[0].cpu().numpy()
            after, found_size = self._decoded(chunk, found), self._bytes(found)
            if pays(psnr_of(after.mse) - psnr_of(before.mse), size, found_size):
                return found, after, found_size
        return bits, before, size


def resolve(name: str) -> Preset:
    if name not in PRESETS:
        from ..base.errors import LfqError

        raise LfqError(f"unknown preset {name!r} (use {', '.join(PRESETS)})")
    return PRESETS[name]


def write_runs(runner: RunEncoder, splitter, writer, gop: int, bar=None) -> None:
    """Encode the frames of ``splitter`` (a :class:`~lfqcodec.codec.scenecut.ChunkSplitter`) in runs of
    whole chunks (at most ``run_frames`` frames, never across a scene cut) and write each run's
    update (when one is sent) and chunks to ``writer``. ``bar`` (tqdm, in frames) advances with the
    run's work, so its ETA covers fitting and search."""
    run_frames = runner.preset.run_frames
    pending: tuple[list[np.ndarray], bool] | None = None
    previous = None
    while True:
        chunks: list[list[np.ndarray]] = []
        fresh = False
        while True:
            if pending is None:
                frames = list(itertools.islice(splitter.chunk(), gop))
                pending = (frames, splitter.starts_scene) if frames else None
            if pending is None:
                break
            frames, starts_scene = pending
            if chunks and (starts_scene or sum(map(len, chunks)) + len(frames) > run_frames):
                break
            chunks.append(frames)
            fresh = fresh or starts_scene
            pending = None
        if not chunks:
            return
        if fresh:
            previous = None
        total = sum(map(len, chunks))
        units = runner.work_units(total, len(chunks))
        if bar is not None:
            runner.tick = _ticker(bar, total, units)
        result = runner.encode([runner.prepare(c) for c in chunks], previous)
        if result.payload is not None:
            if not hasattr(writer, "write_update"):
                from ..base.errors import LfqError

                raise LfqError("this build's .lfq writer cannot store a decoder update (needs .lfq 2.0)")
            writer.write_update(result.payload, len(writer.entries), len(result.chunks))
        for chunk in result.chunks:
            writer.write_chunk(chunk.bits[: runner.keep], len(chunk.frames))
        previous = result.last_error


def _ticker(bar, frames: int, units: int) -> Callable[[int], None]:
    """Advance ``bar`` (whole frames) by ``frames * done / units`` as work units are done."""
    done = [0, 0]  # units done, frames shown

    def tick(n: int) -> None:
        done[0] += n
        shown = min(frames, frames * done[0] // max(units, 1))
        if shown > done[1]:
            bar.update(shown - done[1])
            done[1] = shown

    return tick
