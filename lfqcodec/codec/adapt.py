"""Per-clip decoder update: a compact set of decoder parameters fitted to a clip at encode time.

The encoder of a slow preset (:mod:`lfqcodec.presets.preset`) fine-tunes a few of the decoder's parameters
on the frames of a run of chunks, quantises the change and stores it in the file; the decoder adds
it to its weights before it decodes those chunks (:func:`applied`). The change never touches the
tokens: how bits are parsed and which bits are stored stay the same (the encoder may *choose* other
bits after fitting, with the same search as ``--search``).

Which parameters (an :class:`UpdateSpec`) is chosen by module type, never by tensor name, so any
tokenizer of this architecture family works (``docs/FORMAT.md``, "Decoder update payload"):

- ``norms``: the weight and bias of every :class:`~lfqcodec.model.layers.ChannelNorm` of the decoder;
- ``biases``: the bias of every convolution of the decoder;
- ``lora_rank`` r > 0: a rank-r change ``A @ B`` (``out x r`` times ``r x in``) of the centre tap
  (last time step, centre pixel) of every convolution of the decoder trunk (not the refiner);
- ``refiner``: every parameter of the refiner.

Parameters are enumerated in ``decoder.named_modules()`` order, so the payload holds no names.
Each tensor's change is quantised on its own uniform grid (``step = max|change| / (2^(bits-1) - 1)``,
the step stored as float16) and all integers are zstd-compressed together (one frame, with its checksum).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import zstandard
from torch import nn

from ..base.errors import FormatError
from ..model.layers import ChannelNorm
from ..format.zstdframe import check_frame

PAYLOAD_MAGIC = b"LFU1"
_HEAD = struct.Struct("<4sBBBBI")  # magic, flags, lora rank, bits, reserved, tensor count
FLAG_NORMS, FLAG_BIASES, FLAG_REFINER = 1, 2, 4
MAX_RAW = 1 << 26  # bytes of quantised values a payload may declare (far above any decoder)


@dataclass(frozen=True)
class UpdateSpec:
    """Which decoder parameters an update changes, and how finely they are quantised."""

    norms: bool = True  # ChannelNorm weight and bias
    biases: bool = True  # convolution biases
    lora_rank: int = 0  # rank of the centre-tap adapter on each trunk convolution (0 = none)
    refiner: bool = False  # every refiner parameter
    bits: int = 8  # quantiser bits per value (2..8)

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8 or not 0 <= self.lora_rank <= 255:
            raise ValueError("update bits must be 2..8 and lora_rank 0..255")

    @property
    def flags(self) -> int:
        return FLAG_NORMS * self.norms | FLAG_BIASES * self.biases | FLAG_REFINER * self.refiner


@dataclass(frozen=True)
class Slot:
    """One changed tensor: ``param`` gets ``+ delta`` (``lora`` False) or, for an adapter, its
    centre tap gets ``+ A @ B`` where the slot holds A (``out x r``) and the next slot B (``r x in``)."""

    param: nn.Parameter
    shape: tuple[int, ...]  # shape of the transmitted tensor
    lora: str = ""  # "", "A" or "B"


def _convs(module: nn.Module) -> Iterator[nn.Conv3d]:
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            yield m


def slots(decoder: nn.Module, spec: UpdateSpec) -> list[Slot]:
    """The tensors ``spec`` changes in ``decoder``, in a fixed order (see the module docstring)."""
    refiner = getattr(decoder, "refine", None)
    in_refiner = {id(p) for p in refiner.parameters()} if refiner is not None else set()
    chosen: dict[int, nn.Parameter] = {}
    for m in decoder.modules():
        if spec.norms and isinstance(m, ChannelNorm) and m.weight is not None:
            chosen.setdefault(id(m.weight), m.weight)
            chosen.setdefault(id(m.bias), m.bias)
        if spec.biases and isinstance(m, nn.Conv3d) and m.bias is not None:
            chosen.setdefault(id(m.bias), m.bias)
    if spec.refiner and refiner is not None:
        for p in refiner.parameters():
            chosen.setdefault(id(p), p)
    result = [Slot(p, tuple(p.shape)) for p in decoder.parameters() if id(p) in chosen]
    if spec.lora_rank:
        for conv in _convs(decoder):
            if id(conv.weight) in in_refiner:
                continue
            out, inp = conv.weight.shape[:2]
            result.append(Slot(conv.weight, (out, spec.lora_rank), "A"))
            result.append(Slot(conv.weight, (spec.lora_rank, inp), "B"))
    return result


@dataclass(frozen=True)
class DecoderUpdate:
    """A quantised update: ``values[i]`` (int8, ``slots[i].shape``) times ``steps[i]``."""

    spec: UpdateSpec
    steps: tuple[float, ...]  # float16-representable quantiser step per tensor
    values: tuple[np.ndarray, ...]  # int8 per tensor

    def tensors(self) -> list[torch.Tensor]:
        """The dequantised changes (float32), in slot order."""
        return [torch.from_numpy(v.astype(np.float32)) * s for v, s in zip(self.values, self.steps)]

    def to_bytes(self, level: int = 19) -> bytes:
        """The payload stored in the file (``docs/FORMAT.md``, "Decoder update payload")."""
        spec = self.spec
        head = _HEAD.pack(PAYLOAD_MAGIC, spec.flags, spec.lora_rank, spec.bits, 0, len(self.values))
        steps = np.asarray(self.steps, dtype="<f2").tobytes()
        raw = b"".join(v.astype(np.int8).tobytes() for v in self.values)
        return head + steps + zstandard.ZstdCompressor(level=level, write_checksum=True).compress(raw)

    @classmethod
    def from_bytes(cls, data: bytes, decoder: nn.Module) -> DecoderUpdate:
        """Parse and check a payload against ``decoder`` (the model the file names)."""
        if len(data) < _HEAD.size:
            raise FormatError("decoder update: payload truncated")
        magic, flags, rank, bits, reserved, count = _HEAD.unpack_from(data)
        if magic != PAYLOAD_MAGIC or reserved or flags & ~7 or not 2 <= bits <= 8:
            raise FormatError("decoder update: unknown payload layout")
        spec = UpdateSpec(bool(flags & FLAG_NORMS), bool(flags & FLAG_BIASES), rank, bool(flags & FLAG_REFINER), bits)
        layout = slots(decoder, spec)
        if count != len(layout) or len(data) < _HEAD.size + 2 * count:
            raise FormatError("decoder update: does not fit this model's decoder")
        steps = np.frombuffer(data, dtype="<f2", count=count, offset=_HEAD.size).astype(np.float32)
        sizes = [int(np.prod(s.shape)) for s in layout]
        if not np.all(np.isfinite(steps)) or np.any(steps < 0) or sum(sizes) > MAX_RAW:
            raise FormatError("decoder update: bad quantiser steps")
        frame = data[_HEAD.size + 2 * count :]
        check_frame(frame, sum(sizes), "decoder update", MAX_RAW)  # one frame, its size checked before allocating
        try:
            raw = zstandard.ZstdDecompressor().decompress(frame)
        except zstandard.ZstdError as exc:
            raise FormatError(f"decoder update: cannot decompress ({exc})") from None
        if len(raw) != sum(sizes):
            raise FormatError("decoder update: wrong number of values")
        flat = np.frombuffer(raw, dtype=np.int8)
        limit = 2 ** (bits - 1) - 1
        if np.any(np.abs(flat.astype(np.int16)) > limit):
            raise FormatError("decoder update: value outside the quantiser's range")
        offsets = np.cumsum([0, *sizes])
        values = tuple(flat[a:b].reshape(s.shape).copy() for a, b, s in zip(offsets, offsets[1:], layout))
        return cls(spec, tuple(float(s) for s in steps), values)


def quantize(spec: UpdateSpec, changes: list[torch.Tensor]) -> DecoderUpdate:
    """Quantise float changes (slot order) on a per-tensor uniform grid of ``spec.bits`` bits."""
    limit = 2 ** (spec.bits - 1) - 1
    steps, values = [], []
    for change in changes:
        change = change.detach().float().cpu()
        peak = float(change.abs().max()) if change.numel() else 0.0
        step = float(np.float16(peak / limit)) if peak > 0 else 0.0
        if step == 0.0 or not np.isfinite(step):  # too small for float16: drop the tensor's change
            steps.append(0.0)
            values.append(np.zeros(change.shape, dtype=np.int8))
            continue
        q = torch.round(change / step).clamp(-limit, limit).to(torch.int8).numpy()
        steps.append(step)
        values.append(q)
    return DecoderUpdate(spec, tuple(steps), tuple(values))


def effective_params(decoder: nn.Module, spec: UpdateSpec, changes: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Decoder parameters with ``changes`` (slot order, differentiable) added, by parameter name,
    for :func:`torch.func.functional_call`. Only the changed parameters are in the dict."""
    layout = slots(decoder, spec)
    names = {id(p): n for n, p in decoder.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    i = 0
    while i < len(layout):
        slot = layout[i]
        name = names[id(slot.param)]
        base = out.get(name, slot.param)
        if slot.lora == "A":
            low = (changes[i] @ changes[i + 1]).to(base.dtype)  # out x in
            tap = torch.zeros_like(base)
            kt, kh, kw = base.shape[2:]
            tap[:, :, kt - 1, kh // 2, kw // 2] = 1
            out[name] = base + tap * low[:, :, None, None, None]
            i += 2
            continue
        out[name] = base + changes[i].to(base.dtype).view(base.shape)
        i += 1
    return out


@contextlib.contextmanager
def applied(decoder: nn.Module, update: DecoderUpdate | None) -> Iterator[None]:
    """Within this block, ``decoder``'s weights carry ``update`` (nothing changes for None); the
    original weights are restored on exit, also on error."""
    if update is None:
        yield
        return
    layout = slots(decoder, update.spec)
    changed = {n: p for n, p in decoder.named_parameters() if any(p is s.param for s in layout)}
    saved = {n: p.detach().clone() for n, p in changed.items()}
    try:
        with torch.no_grad():
            new = effective_params(decoder, update.spec, [t.to(next(decoder.parameters()).device) for t in update.tensors()])
            for name, value in new.items():
                changed[name].copy_(value)
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                changed[name].copy_(value)


class UpdateState:
    """The update currently applied to a decoder while a file is decoded chunk by chunk: applies a
    new payload only when it differs from the last one (runs of chunks share one)."""

    def __init__(self, decoder: nn.Module):
        self.decoder = decoder
        self.key: object = None
        self._stack = contextlib.ExitStack()

    def use(self, key: object, payload: bytes | None) -> None:
        """Make ``payload`` (None: the shipped decoder) current; ``key`` names it (record number)."""
        if key == self.key:
            return
        self._stack.close()
        self.key = None
        if payload is not None:
            try:
                update = DecoderUpdate.from_bytes(payload, self.decoder)
            except FormatError as exc:  # name the record: "decoder update (record 3): ..."
                raise FormatError(str(exc).replace("decoder update:", f"decoder update (record {key}):", 1)) from None
            self._stack.enter_context(applied(self.decoder, update))
        self.key = key

    def close(self) -> None:
        self._stack.close()
        self.key = None


def update_for(reader, position: int) -> tuple[object, bytes | None]:
    """``(record number, payload)`` of the decoder update that covers the chunk at ``position`` of
    ``reader.chunks``, or ``(None, None)``; a damaged update raises :class:`FormatError`."""
    lookup = getattr(reader, "update_for_chunk", None)
    if lookup is None:  # a container without decoder updates
        return None, None
    found = lookup(reader.chunks[position].index)
    return (None, None) if found is None else (found[0], found[1])
