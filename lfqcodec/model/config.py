"""Architecture and operating-point settings, as frozen JSON-serialisable dataclasses.

A :class:`TokenizerConfig` is stored inside every checkpoint and rebuilt with
``TokenizerConfig.from_dict(saved)`` on load, so a weights file always says what network it holds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TokenizerConfig:
    """Causal 3D-CNN tokenizer with Lookup-Free Quantization (MAGVIT-v2 style)."""

    num_bits: int = 32  # latent channels = bits per token; quality levels keep a prefix of them
    temporal_factor: int = 4  # frames per latent frame after the first (which is coded alone)
    patch_size: int = 4  # space-to-depth factor of the stem (full-resolution work is one reshape)
    channels: tuple[int, ...] = (64, 192)  # width per level; each level after the first halves H, W
    encoder_blocks: tuple[int, ...] = (2, 6)  # residual blocks per level in the encoder (the shipped
    # model's since v3 (commit b33d3d8); it was trained with (1, 2) before and grown with `train --encoder-blocks`)
    decoder_blocks: tuple[int, ...] = (2, 4)  # residual blocks per level in the decoder
    temporal_kernel: int = 3  # causal kernel length (in latent frames) of the 3D convolutions
    refine_channels: tuple[int, ...] = (32, 16)  # per-frame decoder refinement: width per stage, the
    # first at 1/patch_size resolution, each later one at twice the resolution of the one before
    refine_blocks: tuple[int, ...] = (1, 1)  # residual blocks per refiner stage (per-frame work where motion is drawn)
    frame_split: bool = False  # the refiner also reads the coarsest decoder features, split into frames by a
    # learned projection (each output frame gets its own features from the richest level, not only a linear
    # share of the 1/patch_size features)
    residual_bits: int = 0  # > 0: the last `residual_bits` of the num_bits token bits are residual (magnitude)
    # bits: bit `num_bits - residual_bits + c` says whether latent channel c (one of the first residual_bits
    # signs) lies beyond its channel's threshold, so sign + magnitude form a 4-level scalar quantizer
    # (lfqcodec.model.quantizer); 0 = every bit is a sign (versions 1-6)
    residual_blocks: int = 1  # residual blocks of the decoder's residual reader (only with residual_bits)
    quality_bits: dict[str, int] = field(
        default_factory=lambda: {"low": 4, "medium": 16, "high": 32}
    )  # operating point -> number of leading bits kept (nested LFQ)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "encoder_blocks", tuple(self.encoder_blocks))
        object.__setattr__(self, "decoder_blocks", tuple(self.decoder_blocks))
        object.__setattr__(self, "refine_channels", tuple(self.refine_channels))
        object.__setattr__(self, "refine_blocks", tuple(self.refine_blocks))
        if not 1 <= self.num_bits <= 62:
            raise ValueError("num_bits must be in 1..62 (token indices are int64)")
        if len(self.channels) != len(self.encoder_blocks) or len(self.channels) != len(self.decoder_blocks):
            raise ValueError("channels, encoder_blocks and decoder_blocks need one entry per level")
        for name, bits in self.quality_bits.items():
            if not 1 <= bits <= self.num_bits:
                raise ValueError(f"quality {name!r} keeps {bits} bits, outside 1..{self.num_bits}")
        if self.refine_channels and len(self.refine_blocks) != len(self.refine_channels):
            raise ValueError("refine_blocks needs one entry per refiner stage (refine_channels)")
        if any(n < 1 for n in self.refine_blocks):
            raise ValueError("every refiner stage needs at least one block")
        if self.frame_split and not self.refine_channels:
            raise ValueError("frame_split feeds the refiner: it needs refine_channels")
        if not 0 <= self.residual_bits <= self.num_bits // 2:
            raise ValueError("residual_bits must be in 0..num_bits/2 (each reads one of the first sign bits)")
        if self.residual_blocks < 0:
            raise ValueError("residual_blocks must be >= 0")
        if self.refine_channels and self.patch_size % 2 ** (len(self.refine_channels) - 1):
            raise ValueError("refine_channels has more stages than patch_size has factors of 2")

    @property
    def sign_bits(self) -> int:
        """Token bits that are signs of latent channels (the first ones); the rest are residual bits."""
        return self.num_bits - self.residual_bits

    @property
    def design(self) -> str:
        """The quantizer design in words (``info``, the model card)."""
        if not self.residual_bits:
            return f"LFQ, {self.num_bits} sign bits"
        return (f"LFQ, {self.sign_bits} sign bits + {self.residual_bits} residual bits "
                f"(magnitude of channels 0-{self.residual_bits - 1})")

    @property
    def spatial_factor(self) -> int:
        """Pixels per token along each spatial axis."""
        return self.patch_size * 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        data = {**LEGACY_DEFAULTS, **data}
        return cls(**data)


# Values of fields added after model files were first written: a saved config without the field
# describes a network built before it existed.
LEGACY_DEFAULTS: dict[str, Any] = {"refine_channels": (), "refine_blocks": (1, 1), "frame_split": False,
                                   "residual_bits": 0, "residual_blocks": 1}
