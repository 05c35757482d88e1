"""The ``.lfq`` container: reader and writer. ``docs/FORMAT.md`` is the specification; section
names in comments below refer to it. Nothing read from a file is trusted: every size, count and
offset is checked against the file's length and the limits in ``LIMITS`` before it is used.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import BinaryIO

import numpy as np
import zstandard

from .bitpack import pack_bits, unpack_bits
from .errors import FormatError

MAGIC = b"\x89LFQ\r\n\x1a\n"
VERSION_MAJOR = 1
VERSION_MINOR = 1
FLAG_CUT_CHUNKS = 0x1  # chunks may end early (at scene cuts): the index gives each chunk's frames
KNOWN_FLAGS = FLAG_CUT_CHUNKS
CHUNK_MAGIC = b"LFQC"
INDEX_MAGIC = b"LFQI"
TRAILER_MAGIC = b"LFQ!"

# "File header", fixed part (little-endian)
_HEADER = struct.Struct("<8sHHII16sIIIIIIIHHBBHIIIII")
_CHUNK = struct.Struct("<4sIIIIIII")  # "Chunk header"
_INDEX_HEAD = struct.Struct("<4sI")  # "Chunk index"
_INDEX_ENTRY = struct.Struct("<QQII")
_TRAILER = struct.Struct("<Q4sI")  # "Trailer"
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

    def latent_frames(self, frames: int) -> int:
        """Latent frames for a chunk of ``frames`` frames."""
        return 1 + -(-(frames - 1) // self.temporal_factor)

    def chunk_bits(self, frames: int) -> int:
        return self.bits * self.latent_frames(frames) * self.grid_height * self.grid_width

    @property
    def cut_chunks(self) -> bool:
        """Chunks may be shorter than ``gop`` anywhere (their frame ranges come from the index)."""
        return bool(self.flags & FLAG_CUT_CHUNKS)


@dataclass(frozen=True)
class ChunkEntry:
    index: int
    offset: int  # byte offset of the chunk header in the file
    size: int  # bytes: chunk header + payload
    first_frame: int
    frame_count: int


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise FormatError(message)


def _encode_header(h: StreamHeader) -> bytes:
    meta = json.dumps(h.metadata, sort_keys=True, separators=(",", ":")).encode("utf-8")
    size = _HEADER.size + 4 + len(meta) + _CRC.size
    fixed = _HEADER.pack(
        MAGIC, VERSION_MAJOR, VERSION_MINOR, size, h.flags, h.model_id,
        h.width, h.height, h.frame_count,
        h.fps.numerator, h.fps.denominator, h.time_base.numerator, h.time_base.denominator,
        h.bits, h.model_bits, h.temporal_factor, h.spatial_factor, 0,
        h.gop, h.grid_height, h.grid_width, h.chunk_count, 0,
    )  # fmt: skip
    body = fixed + struct.pack("<I", len(meta)) + meta
    return body + _CRC.pack(zlib.crc32(body))


def validate_header(h: StreamHeader, limits: Limits = LIMITS) -> None:
    """Check a header's values against each other and against ``limits``."""
    _check(len(h.model_id) == 16, "model id must be 16 bytes")
    _check(1 <= h.width <= limits.max_side and 1 <= h.height <= limits.max_side,
           f"frame size {h.width}x{h.height} outside 1..{limits.max_side}")  # fmt: skip
    _check(h.width * h.height <= limits.max_pixels, f"frame size {h.width}x{h.height} exceeds the pixel limit")
    _check(0 <= h.frame_count <= limits.max_frames, f"frame count {h.frame_count} out of range")
    _check(h.fps > 0 and h.time_base > 0, "frame rate and time base must be positive")
    _check(1 <= h.bits <= h.model_bits <= 62, f"bits per token {h.bits} (model {h.model_bits}) out of range")
    _check(h.temporal_factor >= 1 and h.spatial_factor >= 1, "temporal and spatial factors must be >= 1")
    _check(1 <= h.gop <= limits.max_gop and (h.gop - 1) % h.temporal_factor == 0,
           f"chunk length {h.gop} must be 1 + {h.temporal_factor}k and at most {limits.max_gop}")  # fmt: skip
    _check(h.grid_height == -(-h.height // h.spatial_factor) and h.grid_width == -(-h.width // h.spatial_factor),
           "latent grid does not match frame size")  # fmt: skip
    _check(h.flags & ~KNOWN_FLAGS == 0, f"unknown header flags {h.flags:#x} (a newer format version?)")
    if h.cut_chunks:
        _check(-(-h.frame_count // h.gop) <= h.chunk_count <= min(h.frame_count, limits.max_chunks),
               "chunk count does not fit the frame count and chunk length")  # fmt: skip
    else:
        _check(h.chunk_count == -(-h.frame_count // h.gop), "chunk count does not match frame count and chunk length")
    _check(h.chunk_bits(h.gop) <= limits.max_chunk_bits, "chunk too large for the limits")


def _decode_header(data: bytes, limits: Limits) -> tuple[StreamHeader, int, str]:
    _check(len(data) >= len(MAGIC) and data[: len(MAGIC)] == MAGIC, "not an .lfq file (bad magic bytes)")
    _check(len(data) >= _HEADER.size + 4, "file truncated inside the header")
    (
        _, major, minor, size, flags, model_id, width, height, frames, fps_n, fps_d, tb_n, tb_d,
        bits, model_bits, tf, sf, reserved1, gop, gh, gw, chunks, reserved2,
    ) = _HEADER.unpack_from(data)  # fmt: skip
    _check(major == VERSION_MAJOR, f"unsupported .lfq version {major}.{minor} (this reader handles {VERSION_MAJOR}.x)")
    (meta_len,) = struct.unpack_from("<I", data, _HEADER.size)
    _check(meta_len <= limits.max_metadata, f"header metadata of {meta_len} bytes exceeds the limit")
    _check(size == _HEADER.size + 4 + meta_len + _CRC.size, "header size field is inconsistent")
    _check(len(data) >= size, "file truncated inside the header")
    (crc,) = _CRC.unpack_from(data, size - _CRC.size)
    _check(zlib.crc32(data[: size - _CRC.size]) == crc, "header checksum mismatch (file corrupt)")
    _check(reserved1 == 0 and reserved2 == 0, "reserved header fields are not zero")
    _check(fps_d != 0 and tb_d != 0, "zero denominator in frame rate or time base")
    try:
        metadata = json.loads(data[_HEADER.size + 4 : size - _CRC.size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FormatError("header metadata is not valid UTF-8 JSON") from None
    _check(isinstance(metadata, dict), "header metadata must be a JSON object")
    header = StreamHeader(
        model_id, width, height, frames, Fraction(fps_n, fps_d), Fraction(tb_n, tb_d), bits, model_bits,
        tf, sf, gop, gh, gw, chunks, flags, metadata,
    )  # fmt: skip
    validate_header(header, limits)
    return header, size, f"{major}.{minor}"


def _chunk_header(entry: ChunkEntry, latent: int, payload: bytes, raw_size: int) -> bytes:
    body = _CHUNK.pack(CHUNK_MAGIC, entry.index, entry.first_frame, entry.frame_count, latent,
                       len(payload), raw_size, zlib.crc32(payload))  # fmt: skip
    return body + _CRC.pack(zlib.crc32(body))


class LfqWriter:
    """Streams chunks to a seekable binary file; ``close()`` writes the index and final header."""

    def __init__(self, fileobj: BinaryIO, header: StreamHeader, zstd_level: int = 19):
        self.file = fileobj
        self.header = replace(header, frame_count=0, chunk_count=0)
        self.compressor = zstandard.ZstdCompressor(level=zstd_level, write_checksum=True)
        self.entries: list[ChunkEntry] = []
        self.frames = 0
        self._start = fileobj.tell()
        self.file.write(_encode_header(self.header))  # rewritten by close() with the final counts

    def write_chunk(self, bits: np.ndarray, frame_count: int) -> ChunkEntry:
        """Append one chunk: ``bits`` is bool ``b x T' x gh x gw`` for ``frame_count`` frames."""
        h = self.header
        expected = (h.bits, h.latent_frames(frame_count), h.grid_height, h.grid_width)
        if tuple(bits.shape) != expected or not 1 <= frame_count <= h.gop:
            raise ValueError(f"chunk bits {tuple(bits.shape)} for {frame_count} frames, expected {expected}")
        if self.entries and self.entries[-1].frame_count != h.gop:  # the last chunk ended at a cut
            self.header = replace(self.header, flags=self.header.flags | FLAG_CUT_CHUNKS)
        packed = pack_bits(bits)
        payload = self.compressor.compress(packed)
        entry = ChunkEntry(len(self.entries), self.file.tell() - self._start, 0, self.frames, frame_count)
        head = _chunk_header(entry, expected[1], payload, len(packed))
        entry = replace(entry, size=len(head) + len(payload))
        self.file.write(head)
        self.file.write(payload)
        self.entries.append(entry)
        self.frames += frame_count
        return entry

    def close(self) -> StreamHeader:
        index_offset = self.file.tell() - self._start
        body = _INDEX_HEAD.pack(INDEX_MAGIC, len(self.entries)) + b"".join(
            _INDEX_ENTRY.pack(e.offset, e.size, e.first_frame, e.frame_count) for e in self.entries
        )
        self.file.write(body + _CRC.pack(zlib.crc32(body)))
        trailer = struct.pack("<Q4s", index_offset, TRAILER_MAGIC)
        self.file.write(trailer + _CRC.pack(zlib.crc32(trailer)))
        end = self.file.tell()
        self.header = replace(self.header, frame_count=self.frames, chunk_count=len(self.entries))
        validate_header(self.header)
        self.file.seek(self._start)
        self.file.write(_encode_header(self.header))
        self.file.seek(end)
        return self.header


class LfqReader:
    """Random access to a ``.lfq`` file's header and chunks; every structure is checked on read."""

    def __init__(self, fileobj: BinaryIO, limits: Limits = LIMITS, salvage: bool = False):
        """``salvage``: when the chunk index is damaged or missing (a truncated file), find the chunks
        by scanning for their checksummed headers instead of failing; ``chunks`` then lists only
        the chunks found, and ``index_damage`` says why the index was not used."""
        self.file = fileobj
        self.limits = limits
        fileobj.seek(0, io.SEEK_END)
        self.file_size = fileobj.tell()
        fileobj.seek(0)
        head = fileobj.read(min(self.file_size, _HEADER.size + 4 + limits.max_metadata + _CRC.size))
        self.header, self.header_size, self.version = _decode_header(head, limits)
        self.index_damage: str | None = None
        try:
            self.chunks = self._read_index()
        except FormatError as exc:
            if not salvage:
                raise
            self.index_damage = str(exc)
            self.chunks = self._scan_chunks()
        self._decompressor = zstandard.ZstdDecompressor()

    def _scan_chunks(self) -> list[ChunkEntry]:
        """Chunks found by their magic and header checksum, in file order, at most one per number."""
        h = self.header
        self.file.seek(0)
        data = self.file.read()  # salvage is a rare, explicit path; memory bounded by the file
        found: dict[int, ChunkEntry] = {}
        position = self.header_size
        while True:
            position = data.find(CHUNK_MAGIC, position)
            if position < 0 or position + _CHUNK.size + _CRC.size > len(data):
                break
            head = data[position : position + _CHUNK.size]
            index, first, frames, _, payload_size, _, _ = _CHUNK.unpack(head)[1:]
            (crc,) = _CRC.unpack_from(data, position + _CHUNK.size)
            size = _CHUNK.size + _CRC.size + payload_size
            if h.cut_chunks:
                frames_ok = first < h.frame_count and 1 <= frames <= min(h.gop, h.frame_count - first)
            else:
                frames_ok = first == index * h.gop and frames == min(h.gop, h.frame_count - first)
            valid = (zlib.crc32(head) == crc and index < h.chunk_count and frames_ok
                     and position + size <= len(data))  # fmt: skip
            if not valid:
                position += 1
                continue
            found.setdefault(index, ChunkEntry(index, position, size, first, frames))
            position += size
        chunks, covered = [], 0
        for i in sorted(found):  # keep chunks in order and disjoint in time
            if found[i].first_frame >= covered:
                chunks.append(found[i])
                covered = found[i].first_frame + found[i].frame_count
        return chunks

    def _read_index(self) -> list[ChunkEntry]:
        h = self.header
        _check(self.file_size >= self.header_size + _TRAILER.size, "file truncated (no trailer)")
        self.file.seek(self.file_size - _TRAILER.size)
        index_offset, magic, crc = _TRAILER.unpack(self.file.read(_TRAILER.size))
        _check(magic == TRAILER_MAGIC, "file truncated or damaged (trailer not found)")
        _check(zlib.crc32(struct.pack("<Q4s", index_offset, magic)) == crc, "trailer checksum mismatch")
        index_size = _INDEX_HEAD.size + h.chunk_count * _INDEX_ENTRY.size + _CRC.size
        _check(index_offset + index_size == self.file_size - _TRAILER.size, "chunk index offset out of range")
        self.file.seek(index_offset)
        data = self.file.read(index_size)
        _check(zlib.crc32(data[:-_CRC.size]) == _CRC.unpack_from(data, index_size - _CRC.size)[0],
               "chunk index checksum mismatch (file corrupt)")  # fmt: skip
        magic, count = _INDEX_HEAD.unpack_from(data)
        _check(magic == INDEX_MAGIC and count == h.chunk_count, "chunk index does not match the header")
        entries = []
        position, next_first = self.header_size, 0
        for i in range(count):
            offset, size, first, frames = _INDEX_ENTRY.unpack_from(data, _INDEX_HEAD.size + i * _INDEX_ENTRY.size)
            _check(offset == position and size > _CHUNK.size + _CRC.size and offset + size <= index_offset,
                   f"chunk {i}: offset or size out of range")  # fmt: skip
            if h.cut_chunks:
                frames_ok = first == next_first and 1 <= frames <= min(h.gop, h.frame_count - first)
            else:
                frames_ok = first == i * h.gop and frames == min(h.gop, h.frame_count - first)
            _check(frames_ok, f"chunk {i}: frame range does not match the header")
            entries.append(ChunkEntry(i, offset, size, first, frames))
            position, next_first = offset + size, first + frames
        _check(position == index_offset, "chunk data does not fill the file up to the index")
        _check(next_first == h.frame_count, "chunks do not cover the header's frame count")
        return entries

    def read_chunk(self, i: int) -> np.ndarray:
        """Bits of the chunk at position ``i`` of ``chunks`` as bool ``b x T' x gh x gw``, after
        checking both checksums."""
        h, entry = self.header, self.chunks[i]
        i = entry.index
        self.file.seek(entry.offset)
        data = self.file.read(entry.size)
        _check(len(data) == entry.size, f"chunk {i}: truncated")
        head = data[: _CHUNK.size]
        magic, index, first, frames, latent, payload_size, raw_size, payload_crc = _CHUNK.unpack(head)
        (head_crc,) = _CRC.unpack_from(data, _CHUNK.size)
        _check(magic == CHUNK_MAGIC and zlib.crc32(head) == head_crc, f"chunk {i}: header checksum mismatch")
        expected_latent = h.latent_frames(entry.frame_count)
        expected_raw = (h.chunk_bits(entry.frame_count) + 7) // 8
        _check((index, first, frames, latent) == (i, entry.first_frame, entry.frame_count, expected_latent),
               f"chunk {i}: header does not match the index")  # fmt: skip
        _check(raw_size == expected_raw and payload_size == entry.size - _CHUNK.size - _CRC.size,
               f"chunk {i}: payload size does not match the header")  # fmt: skip
        payload = data[_CHUNK.size + _CRC.size :]
        _check(zlib.crc32(payload) == payload_crc, f"chunk {i}: payload checksum mismatch (file corrupt)")
        try:
            # the zstd frame declares its content size: check it before anything is allocated
            _check(zstandard.frame_content_size(payload) == raw_size, f"chunk {i}: payload declares the wrong size")
            packed = self._decompressor.decompress(payload, max_output_size=raw_size)
        except zstandard.ZstdError as exc:
            raise FormatError(f"chunk {i}: cannot decompress payload ({exc})") from None
        _check(len(packed) == raw_size, f"chunk {i}: payload decompresses to the wrong size")
        return unpack_bits(packed, (h.bits, expected_latent, h.grid_height, h.grid_width))

    def chunks_for_frames(self, start: int, count: int) -> list[ChunkEntry]:
        """The chunks that hold frames ``start .. start+count-1``."""
        end = start + count
        return [c for c in self.chunks if c.first_frame < end and c.first_frame + c.frame_count > start]
