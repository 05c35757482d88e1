"""Bit-plane packing of token bits (layout specified in ``docs/FORMAT.md``, "Chunk payload").

Bits ``B x T x H x W`` (bool) are stored plane by plane: all of bit 0 in ``t, y, x`` raster
order, then all of bit 1, and so on, eight tokens' bits per byte, first token in the least
significant bit; the last byte is zero-padded.
"""

from __future__ import annotations

import numpy as np


def pack_bits(bits: np.ndarray) -> bytes:
    """``B x T x H x W`` bool -> packed bytes (``ceil(B*T*H*W / 8)`` of them)."""
    return np.packbits(np.ascontiguousarray(bits, dtype=bool).reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Inverse of :func:`pack_bits`; ``data`` must be exactly ``ceil(prod(shape) / 8)`` bytes."""
    count = int(np.prod(shape))
    if len(data) != (count + 7) // 8:
        raise ValueError(f"packed size {len(data)} does not match {count} bits")
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count, bitorder="little")
    return flat.astype(bool).reshape(shape)


def compressed_size(bits: np.ndarray, level: int = 19) -> int:
    """Bytes that ``bits`` take after packing and zstd (payload only, no container overhead)."""
    import zstandard  # here, not at import: training runs where the codec's libraries are absent

    return len(zstandard.ZstdCompressor(level=level).compress(pack_bits(bits)))
