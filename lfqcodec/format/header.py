"""The ``.lfq`` file header, versions 1.x and 2.0 (``docs/FORMAT.md``, "File header"), and the
limits every reader checks before it allocates anything ("Limits")."""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from fractions import Fraction

from ..base.errors import FormatError

MAGIC = b"\x89LFQ\r\n\x1a\n"
VERSIONS = {(1, 1), (2, 0), (2, 1)}  # what this writer produces; the reader takes any 1.x and 2.x
FLAG_CUT_CHUNKS = 0x1  # chunks may end early (at scene cuts): the index gives each chunk's frames
KNOWN_FLAGS = FLAG_CUT_CHUNKS
CODER_ZSTD = 0  # 1.x: bit planes packed and zstd-compressed
CODER_CONTEXT = 1  # 2.0: context model + range coder
CODER_NET = 2  # 2.1: context model with its residual network + range coder

# "File header", fixed part (little-endian), the same in 1.x and 2.0 up to offset 92
_HEADER = struct.Struct("<8sHHII16sIIIIIIIHHBBHIIIII")
_V2_EXTRA = struct.Struct("<HH16s")  # 2.0: coder, reserved, entropy model id
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class Limits:
    """Sanity limits checked before anything is allocated ("Limits" in FORMAT.md)."""

    max_side: int = 16384
    max_pixels: int = 16384 * 16384 // 4  # width * height
    max_frames: int = 2**31 - 1
    max_gop: int = 4097
    max_chunk_payload: int = 1 << 30  # compressed bytes per chunk
    max_chunk_bits: int = 8 << 30  # token bits per chunk before compression (1 GiB packed)
    max_metadata: int = 65536
    max_chunks: int = 1 << 24
    max_update_payload: int = 256 << 20  # bytes of one decoder update record


LIMITS = Limits()


@dataclass(frozen=True)
class StreamHeader:
    """Everything the file header records ("File header" in FORMAT.md)."""

    model_id: bytes  # first 16 bytes of the model weights' SHA-256
    width: int
    height: int
    frame_count: int
    fps: Fraction  # frames per second, exact
    time_base: Fraction  # of the source stream, kept for reference
    bits: int  # bits stored per token (the quality level's prefix)
    model_bits: int  # bits per token the model produces
    temporal_factor: int
    spatial_factor: int
    gop: int  # most frames per chunk (1 + temporal_factor * k); the last chunk may be shorter,
    # and with FLAG_CUT_CHUNKS any chunk may be (a new chunk starts at each scene cut)
    grid_height: int  # tokens per column of a latent frame
    grid_width: int
    chunk_count: int = 0
    flags: int = 0
    metadata: dict = field(default_factory=dict)  # model name, quality, source format and colour
    version: tuple[int, int] = (2, 0)
    coder: int = CODER_CONTEXT  # CODER_ZSTD in 1.x
    entropy_id: bytes = bytes(16)  # 2.0: the context model's id; all zero = the built-in adaptive one

    def latent_frames(self, frames: int) -> int:
        """Latent frames for a chunk of ``frames`` frames."""
        return 1 + -(-(frames - 1) // self.temporal_factor)

    def chunk_bits(self, frames: int) -> int:
        return self.bits * self.latent_frames(frames) * self.grid_height * self.grid_width

    @property
    def cut_chunks(self) -> bool:
        """Chunks may be shorter than ``gop`` anywhere (their frame ranges come from the index)."""
        return bool(self.flags & FLAG_CUT_CHUNKS)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise FormatError(message)


# Metadata keys this format defines: each holds a string (FORMAT.md, "File header").
STRING_KEYS = ("model_name", "quality", "encoder", "preset", "precision", "search_steps", "source_codec",
               "source_pix_fmt", "source_color_range", "source_colorspace", "source_color_primaries",
               "source_color_trc", "source_rotation", "conversion", "timing")  # fmt: skip
MAX_DEPTH = 32  # arrays and objects nested in the metadata object, at most


def encode_metadata(metadata: dict) -> bytes:
    """Strict JSON: ``NaN`` and infinities are refused (``ValueError``), as the reader does."""
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is not finite")
    return value


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _depth(value: object) -> int:
    """How deep arrays and objects nest in ``value`` (iterative: no recursion on hostile input)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def decode_metadata(data: bytes) -> dict:
    """The header's metadata: a strict JSON object (RFC 8259: no ``NaN`` or ``Infinity``, every
    number finite), nested at most ``MAX_DEPTH`` deep, the keys in ``STRING_KEYS`` strings."""
    try:
        metadata = json.loads(data.decode("utf-8"), parse_constant=_not_json, parse_float=_finite)
    except RecursionError:
        raise FormatError("header metadata is nested too deeply") from None
    except (UnicodeDecodeError, ValueError):
        raise FormatError("header metadata is not valid UTF-8 JSON (strict: finite numbers only)") from None
    check(isinstance(metadata, dict), "header metadata must be a JSON object")
    check(_depth(metadata) <= MAX_DEPTH, f"header metadata is nested more than {MAX_DEPTH} deep")
    wrong = [k for k in STRING_KEYS if k in metadata and not isinstance(metadata[k], str)]
    check(not wrong, f"header metadata: {wrong[0] if wrong else ''} must be a string")
    return metadata


def encode_header(h: StreamHeader) -> bytes:
    meta = encode_metadata(h.metadata)
    extra = _V2_EXTRA.pack(h.coder, 0, h.entropy_id) if h.version[0] == 2 else b""
    size = _HEADER.size + len(extra) + 4 + len(meta) + _CRC.size
    fixed = _HEADER.pack(
        MAGIC, *h.version, size, h.flags, h.model_id,
        h.width, h.height, h.frame_count,
        h.fps.numerator, h.fps.denominator, h.time_base.numerator, h.time_base.denominator,
        h.bits, h.model_bits, h.temporal_factor, h.spatial_factor, 0,
        h.gop, h.grid_height, h.grid_width, h.chunk_count, 0,
    )  # fmt: skip
    body = fixed + extra + struct.pack("<I", len(meta)) + meta
    return body + _CRC.pack(zlib.crc32(body))


def validate_header(h: StreamHeader, limits: Limits = LIMITS) -> None:
    """Check a header's values against each other and against ``limits``."""
    check(len(h.model_id) == 16 and len(h.entropy_id) == 16, "model ids must be 16 bytes")
    check(1 <= h.width <= limits.max_side and 1 <= h.height <= limits.max_side,
          f"frame size {h.width}x{h.height} outside 1..{limits.max_side}")  # fmt: skip
    check(h.width * h.height <= limits.max_pixels, f"frame size {h.width}x{h.height} exceeds the pixel limit")
    check(0 <= h.frame_count <= limits.max_frames, f"frame count {h.frame_count} out of range")
    check(h.fps > 0 and h.time_base > 0, "frame rate and time base must be positive")
    check(1 <= h.bits <= h.model_bits <= 62, f"bits per token {h.bits} (model {h.model_bits}) out of range")
    check(h.temporal_factor >= 1 and h.spatial_factor >= 1, "temporal and spatial factors must be >= 1")
    check(1 <= h.gop <= limits.max_gop and (h.gop - 1) % h.temporal_factor == 0,
          f"chunk length {h.gop} must be 1 + {h.temporal_factor}k and at most {limits.max_gop}")  # fmt: skip
    check(h.grid_height == -(-h.height // h.spatial_factor) and h.grid_width == -(-h.width // h.spatial_factor),
          "latent grid does not match frame size")  # fmt: skip
    check(h.flags & ~KNOWN_FLAGS == 0, f"unknown header flags {h.flags:#x} (a newer format version?)")
    coders = (CODER_ZSTD,) if h.version[0] == 1 else (CODER_CONTEXT, CODER_NET)
    check(h.coder in coders, f"unknown coder {h.coder} for format {h.version[0]}.x")
    if h.cut_chunks:
        check(-(-h.frame_count // h.gop) <= h.chunk_count <= min(h.frame_count, limits.max_chunks),
              "chunk count does not fit the frame count and chunk length")  # fmt: skip
    else:
        check(h.chunk_count == -(-h.frame_count // h.gop), "chunk count does not match frame count and chunk length")
    check(h.chunk_bits(h.gop) <= limits.max_chunk_bits, "chunk too large for the limits")


def decode_header(data: bytes, limits: Limits = LIMITS) -> tuple[StreamHeader, int]:
    """Parse and check the file header at the start of ``data``; returns it and its size."""
    check(len(data) >= 8 and data[:8] == MAGIC, "not an .lfq file (bad magic bytes)")
    check(len(data) >= _HEADER.size + 4, "file truncated inside the header")
    (_, major, minor, size, flags, model_id, width, height, frames, fps_n, fps_d, tb_n, tb_d, bits, model_bits,
     tf, sf, reserved1, gop, gh, gw, chunks, reserved2) = _HEADER.unpack_from(data)  # fmt: skip
    check(major in (1, 2), f"unsupported .lfq version {major}.{minor} (this reader handles 1.x and 2.x)")
    coder, entropy_id, at = CODER_ZSTD, bytes(16), _HEADER.size
    if major == 2:
        check(len(data) >= at + _V2_EXTRA.size + 4, "file truncated inside the header")
        coder, reserved3, entropy_id = _V2_EXTRA.unpack_from(data, at)
        check(reserved3 == 0, "reserved header fields are not zero")
        at += _V2_EXTRA.size
    (meta_len,) = struct.unpack_from("<I", data, at)
    check(meta_len <= limits.max_metadata, f"header metadata of {meta_len} bytes exceeds the limit")
    check(size == at + 4 + meta_len + _CRC.size, "header size field is inconsistent")
    check(len(data) >= size, "file truncated inside the header")
    (crc,) = _CRC.unpack_from(data, size - _CRC.size)
    check(zlib.crc32(data[: size - _CRC.size]) == crc, "header checksum mismatch (file corrupt)")
    check(reserved1 == 0 and reserved2 == 0, "reserved header fields are not zero")
    check(fps_d != 0 and tb_d != 0, "zero denominator in frame rate or time base")
    metadata = decode_metadata(data[at + 4 : size - _CRC.size])
    header = StreamHeader(
        model_id, width, height, frames, Fraction(fps_n, fps_d), Fraction(tb_n, tb_d), bits, model_bits,
        tf, sf, gop, gh, gw, chunks, flags, metadata, (major, minor), coder, entropy_id,
    )  # fmt: skip
    validate_header(header, limits)
    return header, size


def header_bytes_limit(limits: Limits = LIMITS) -> int:
    """Most bytes a header can take (read this many to parse one)."""
    return _HEADER.size + _V2_EXTRA.size + 4 + limits.max_metadata + _CRC.size
