"""The ``.lfq`` container: reader and writer for versions 1.x and 2.0. ``docs/FORMAT.md`` is the
specification; section names in comments below refer to it. Nothing read from a file is trusted:
every size, count and offset is checked against the file's length and the limits in ``LIMITS``
before it is used, and chunk bits are produced one latent frame at a time, so memory is bounded by
the frame size, not by what a header claims.
"""

from __future__ import annotations

import bisect
import io
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import replace
from typing import BinaryIO

import numpy as np
import zstandard

from .bitpack import pack_bits
from ..entropy.coder import FittedModel, decode_bits, encode_bits
from ..base.errors import FormatError, ModelError
from .header import (
    CODER_CONTEXT, CODER_NET, CODER_ZSTD, FLAG_CUT_CHUNKS, LIMITS, MAGIC, VERSIONS, Limits, StreamHeader, check,
    decode_header, decode_metadata, encode_header, encode_metadata, header_bytes_limit, validate_header,
)  # fmt: skip
from .records import (
    CHUNK_MAGIC, CHUNK_V1, CRC, INDEX_HEAD, INDEX_MAGIC, INDEX_V1, INDEX_V2, RECORD, RECORD_MAGIC, SKIPPABLE,
    TRAILER, TRAILER_MAGIC, TYPE_CHUNK, TYPE_UPDATE, ChunkEntry, ChunkTable, RecordEntry, chunk_header_v1, index_bytes,
    payload_cap, record_header, trailer_bytes,
)  # fmt: skip
from .scan import Notes, scan_records
from .zstdframe import check_frame

__all__ = ["LIMITS", "MAGIC", "ChunkEntry", "Limits", "LfqReader", "LfqWriter", "RecordEntry", "StreamHeader",
           "validate_header"]  # fmt: skip

LISTED_SKIPPED = 100  # skippable records kept in ``others``; the rest are only counted
INDEX_BLOCK = 1 << 20  # bytes of the chunk index read at once
SPOOL_BYTES = 64 << 20  # decompressed 1.x payloads larger than this are spooled to a temporary file


class LfqWriter:
    """Streams chunks (and 2.0 decoder updates) to a seekable binary file; ``close()`` writes the
    index and the final header.

    ``version=(2, 0)`` (default) codes each chunk with ``entropy_model`` when one is given (and
    falls back to zstd bit planes for a chunk where that is smaller), else with zstd bit planes; a
    model with a residual network (coder 2) makes the file 2.1. ``version=(1, 1)`` writes the legacy
    format."""

    def __init__(self, fileobj: BinaryIO, header: StreamHeader, zstd_level: int = 19,
                 version: tuple[int, int] = (2, 0), entropy_model: FittedModel | None = None):  # fmt: skip
        if version not in VERSIONS:
            raise ValueError(f"cannot write .lfq version {version}")
        if version[0] == 1 and entropy_model is not None:
            raise ValueError("format 1.x has no entropy model")
        if entropy_model is not None and entropy_model.bits < header.bits:
            raise ValueError(f"entropy model has {entropy_model.bits} bit planes, the file {header.bits}")
        decode_metadata(encode_metadata(header.metadata))  # strict JSON, finite numbers, as readers check
        meta = len(encode_metadata(header.metadata))
        if meta > LIMITS.max_metadata:
            raise FormatError(f"header metadata of {meta} bytes exceeds the {LIMITS.max_metadata}-byte limit")
        self.file = fileobj
        self.entropy_model = entropy_model
        if entropy_model is not None and entropy_model.net is not None:
            version = (2, 1)  # coder 2 is 2.1's
        self.header = replace(header, frame_count=0, chunk_count=0, version=version,
                              coder=CODER_ZSTD if version[0] == 1 else entropy_model.coder if entropy_model else CODER_CONTEXT,
                              entropy_id=entropy_model.model_id if entropy_model else bytes(16))  # fmt: skip
        validate_header(replace(self.header, gop=header.gop))
        self.compressor = zstandard.ZstdCompressor(level=zstd_level, write_checksum=True)
        self.entries: list[ChunkEntry] = []
        self.others: list[RecordEntry] = []
        self.frames = 0
        self._start = fileobj.tell()
        self.file.write(encode_header(self.header))  # rewritten by close() with the final counts

    @property
    def _records(self) -> int:
        return len(self.entries) + len(self.others)

    def _position(self) -> int:
        return self.file.tell() - self._start

    def write_update(self, payload: bytes, first_chunk: int, chunk_count: int) -> None:
        """A decoder update (record type 1, must be understood) for chunks ``first_chunk ..
        first_chunk + chunk_count - 1``, written before them (2.0 only)."""
        if self.header.version[0] != 2:
            raise ValueError("decoder updates need format 2.0")
        updates = [e for e in self.others if e.type == TYPE_UPDATE]
        covered = updates[-1].first_chunk + updates[-1].chunk_count if updates else 0
        if chunk_count < 1 or first_chunk < max(len(self.entries), covered):
            raise ValueError(f"update for chunks {first_chunk}+{chunk_count}: must come before them and not overlap")
        if len(payload) > LIMITS.max_update_payload:
            raise ValueError(f"update of {len(payload)} bytes exceeds the {LIMITS.max_update_payload}-byte limit")
        head = record_header(TYPE_UPDATE, 0, self._records, first_chunk, chunk_count, 0, 0, 0, 0, payload)
        entry = RecordEntry(self._records, TYPE_UPDATE, self._position(), len(head) + len(payload), first_chunk,
                            chunk_count)  # fmt: skip
        self.file.write(head + payload)
        self.others.append(entry)

    def _update_for(self, chunk: int) -> int:
        for e in self.others:
            if e.type == TYPE_UPDATE and e.first_chunk <= chunk < e.first_chunk + e.chunk_count:
                return e.record
        return -1

    def write_chunk(self, bits: np.ndarray, frame_count: int) -> ChunkEntry:
        """Append one chunk: ``bits`` is bool ``b x T' x gh x gw`` for ``frame_count`` frames."""
        h = self.header
        expected = (h.bits, h.latent_frames(frame_count), h.grid_height, h.grid_width)
        if tuple(bits.shape) != expected or not 1 <= frame_count <= h.gop:
            raise ValueError(f"chunk bits {tuple(bits.shape)} for {frame_count} frames, expected {expected}")
        if self.entries and self.entries[-1].frame_count != h.gop:  # the last chunk ended at a cut
            self.header = replace(self.header, flags=self.header.flags | FLAG_CUT_CHUNKS)
        packed = pack_bits(bits)
        payload, coder, raw = self.compressor.compress(packed), CODER_ZSTD, len(packed)
        if self.entropy_model is not None:
            coded = encode_bits(bits, self.entropy_model)
            if len(coded) < len(payload):
                payload, coder, raw = coded, self.entropy_model.coder, 0
        entry = ChunkEntry(len(self.entries), self._position(), 0, self.frames, frame_count, self._records,
                           self._update_for(len(self.entries)), coder)  # fmt: skip
        if h.version[0] == 1:
            head = chunk_header_v1(entry, expected[1], raw, payload)
        else:
            head = record_header(TYPE_CHUNK, coder, entry.record, entry.index, entry.update + 1, self.frames,
                                 frame_count, expected[1], raw, payload)  # fmt: skip
        entry = replace(entry, size=len(head) + len(payload))
        self.file.write(head)
        self.file.write(payload)
        self.entries.append(entry)
        self.frames += frame_count
        return entry

    def close(self) -> StreamHeader:
        updates = [e for e in self.others if e.type == TYPE_UPDATE]
        if updates and updates[-1].first_chunk + updates[-1].chunk_count > len(self.entries):
            raise ValueError("a decoder update covers chunks that were never written")
        index_offset = self._position()
        self.file.write(index_bytes(self.header.version[0], self.entries, self.others))
        self.file.write(trailer_bytes(index_offset))
        end = self.file.tell()
        self.header = replace(self.header, frame_count=self.frames, chunk_count=len(self.entries))
        validate_header(self.header)
        self.file.seek(self._start)
        self.file.write(encode_header(self.header))
        self.file.seek(end)
        return self.header


class LfqReader:
    """Random access to a ``.lfq`` file's header, chunks and updates; every structure is checked
    on read. ``entropy_model`` is needed to read 2.0 chunks coded with a context model."""

    def __init__(self, fileobj: BinaryIO, limits: Limits = LIMITS, salvage: bool = False,
                 entropy_model: FittedModel | None = None):  # fmt: skip
        """``salvage``: when the chunk index is damaged or missing (a truncated file), find the chunks
        by scanning for their checksummed headers instead of failing; ``chunks`` then lists only
        the chunks found, and ``index_damage`` says why the index was not used."""
        self.file = fileobj
        self.limits = limits
        fileobj.seek(0, io.SEEK_END)
        self.file_size = fileobj.tell()
        fileobj.seek(0)
        head = fileobj.read(min(self.file_size, header_bytes_limit(limits)))
        self.header, self.header_size = decode_header(head, limits)
        self.version = "{}.{}".format(*self.header.version)
        self.v2 = self.header.version[0] == 2
        self.entropy_model = entropy_model
        self.index_damage: str | None = None
        self.others: list[RecordEntry] = []
        self.notes: Notes | None = None  # salvage: records found but not used
        self.skipped = (0, 0)  # skippable records of the index: how many, bytes (the first LISTED_SKIPPED in others)
        try:
            self.chunks = self._read_index()
        except FormatError as exc:
            if not salvage:
                raise FormatError(f"{exc}; lfqcodec decode --salvage decodes the intact chunks") from None
            self.index_damage = str(exc)
            self.notes = Notes()
            self.chunks, self.others = scan_records(self.file, self.file_size, self.header, self.header_size,
                                                    limits, self.notes)  # fmt: skip
        self.updates = [e for e in self.others if e.type == TYPE_UPDATE]
        self._decompressor = zstandard.ZstdDecompressor()

    def _read_index(self) -> ChunkTable:
        h = self.header
        check(self.file_size >= self.header_size + TRAILER.size, "file truncated (no trailer)")
        self.file.seek(self.file_size - TRAILER.size)
        index_offset, magic, crc = TRAILER.unpack(self.file.read(TRAILER.size))
        check(magic == TRAILER_MAGIC, "file truncated or damaged (trailer not found)")
        check(zlib.crc32(struct.pack("<Q4s", index_offset, magic)) == crc, "trailer checksum mismatch")
        check(self.header_size <= index_offset <= self.file_size - TRAILER.size, "chunk index offset out of range")
        entry_size = INDEX_V2.size if self.v2 else INDEX_V1.size
        index_size = self.file_size - TRAILER.size - index_offset
        count = (index_size - INDEX_HEAD.size - CRC.size) // entry_size
        check(index_size == INDEX_HEAD.size + count * entry_size + CRC.size and count <= 2 * self.limits.max_chunks + 1,
              "chunk index offset out of range")  # fmt: skip
        self.file.seek(index_offset)
        crc, left = 0, index_size - CRC.size
        while left:  # a block at a time: memory does not grow with the record count
            piece = self.file.read(min(INDEX_BLOCK, left))
            check(len(piece) > 0, "file truncated (chunk index)")
            crc, left = zlib.crc32(piece, crc), left - len(piece)
        check(crc == CRC.unpack(self.file.read(CRC.size))[0], "chunk index checksum mismatch (file corrupt)")
        self.file.seek(index_offset)
        magic, stored = INDEX_HEAD.unpack(self.file.read(INDEX_HEAD.size))
        check(magic == INDEX_MAGIC and stored == count, "chunk index does not match the header")
        if not self.v2:
            check(count == h.chunk_count, "chunk index does not match the header")
        entries, position, next_first = ChunkTable(), self.header_size, 0
        covered = 0  # chunks before this one that an update may no longer claim
        rows = _index_rows(self.file, count, INDEX_V2 if self.v2 else INDEX_V1)
        for i in range(count):
            if self.v2:
                offset, size, kind, coder, first_chunk, count_or_update, first, frames = next(rows)
            else:
                offset, size, first, frames = next(rows)
                kind, coder, first_chunk, count_or_update = TYPE_CHUNK, CODER_ZSTD, i, 0
            check(offset == position and size >= (RECORD if self.v2 else CHUNK_V1).size + CRC.size + (kind == TYPE_CHUNK)
                  and offset + size <= index_offset,
                  f"record {i}: offset or size out of range")  # fmt: skip
            position = offset + size
            head = (RECORD if self.v2 else CHUNK_V1).size + CRC.size
            if kind == TYPE_UPDATE:
                check(size - head <= self.limits.max_update_payload, f"decoder update (record {i}): payload of "
                      f"{size - head} bytes exceeds the {self.limits.max_update_payload}-byte limit")  # fmt: skip
            if kind != TYPE_CHUNK:
                check(kind == TYPE_UPDATE or kind >= SKIPPABLE,
                      f"record {i} has payload type {kind}, which this reader does not know and must not skip "
                      "(a newer format version?)")  # fmt: skip
                if kind == TYPE_UPDATE:
                    check(count_or_update >= 1 and first_chunk >= covered
                          and first_chunk + count_or_update <= h.chunk_count and first == frames == coder == 0,
                          f"record {i}: decoder update range out of order or out of range")  # fmt: skip
                    covered = first_chunk + count_or_update
                if kind == TYPE_UPDATE or self.skipped[0] < LISTED_SKIPPED:  # memory: not one entry per skipped record
                    self.others.append(RecordEntry(i, kind, offset, size, first_chunk, count_or_update))
                if kind != TYPE_UPDATE:
                    self.skipped = (self.skipped[0] + 1, self.skipped[1] + size)
                continue
            n = len(entries)
            if h.cut_chunks:
                frames_ok = first == next_first and 1 <= frames <= min(h.gop, h.frame_count - first)
            else:
                frames_ok = first == n * h.gop and frames == min(h.gop, h.frame_count - first)
            check(frames_ok and first_chunk == n, f"chunk {n}: frame range does not match the header")
            update = self._covering_update(n) if self.v2 else -1
            check(count_or_update == update + 1, f"chunk {n}: update reference does not match the index")
            check(coder in (CODER_ZSTD, CODER_CONTEXT, CODER_NET)[: 1 + h.coder if self.v2 else 1],
                  f"chunk {n}: unknown coder {coder}")  # fmt: skip
            check(size - head <= payload_cap(kind, coder, h.chunk_bits(frames), self.limits),
                  f"chunk {n}: payload of {size - head} bytes exceeds its limit")  # fmt: skip
            covered = max(covered, n + 1)
            entries.append(ChunkEntry(n, offset, size, first, frames, i, update, coder))
            next_first = first + frames
        check(position == index_offset, "chunk data does not fill the file up to the index")
        check(len(entries) == h.chunk_count, "chunk index does not match the header")
        check(next_first == h.frame_count, "chunks do not cover the header's frame count")
        return entries

    def _covering_update(self, chunk: int) -> int:
        for e in reversed(self.others):
            if e.type == TYPE_UPDATE:
                return e.record if e.first_chunk <= chunk < e.first_chunk + e.chunk_count else -1
        return -1

    def _read_record(self, offset: int, size: int, what: str, cap: int) -> tuple[tuple, bytes]:
        """Header fields and checked payload of the record or 1.x chunk at ``offset``; a payload
        over ``cap`` bytes is refused before it is read."""
        self.file.seek(offset)
        head_struct = RECORD if self.v2 else CHUNK_V1
        data = self.file.read(head_struct.size + CRC.size)
        check(len(data) == head_struct.size + CRC.size, f"{what}: truncated")
        fields = head_struct.unpack_from(data)
        (head_crc,) = CRC.unpack_from(data, head_struct.size)
        magic = RECORD_MAGIC if self.v2 else CHUNK_MAGIC
        check(fields[0] == magic and zlib.crc32(data[: head_struct.size]) == head_crc, f"{what}: header checksum mismatch")
        payload_size, payload_crc = fields[-2:] if self.v2 else (fields[5], fields[7])
        check(payload_size == size - len(data), f"{what}: payload size does not match the header")
        check(payload_size <= cap, f"{what}: payload of {payload_size} bytes exceeds the {cap}-byte limit")
        payload = self.file.read(payload_size)
        check(len(payload) == payload_size, f"{what}: truncated")
        check(zlib.crc32(payload) == payload_crc, f"{what}: payload checksum mismatch (file corrupt)")
        return fields, payload

    def iter_chunk(self, i: int) -> Iterator[np.ndarray]:
        """Bits of the chunk at position ``i`` of ``chunks``, one latent frame at a time (bool
        ``b x gh x gw``), after checking both checksums. Packed or range-coded bits stay so until
        their latent frame is asked for: memory is a few latent frames, whatever the chunk's size."""
        h, entry = self.header, self.chunks[i]
        n = entry.index
        latent = h.latent_frames(entry.frame_count)
        cap = payload_cap(TYPE_CHUNK, entry.coder, h.chunk_bits(entry.frame_count), self.limits)
        fields, payload = self._read_record(entry.offset, entry.size, f"chunk {n}", cap)
        if self.v2:
            _, kind, coder, record, first_chunk, update, first, frames, stored_latent, raw_size = fields[:10]
            ok = (kind, record, first_chunk, update, coder) == (TYPE_CHUNK, entry.record, n, entry.update + 1, entry.coder)
        else:
            _, first_chunk, first, frames, stored_latent, _, raw_size, _ = fields
            coder, ok = CODER_ZSTD, first_chunk == n
        check(ok and (first, frames, stored_latent) == (entry.first_frame, entry.frame_count, latent),
              f"chunk {n}: header does not match the index")  # fmt: skip
        shape = (h.bits, latent, h.grid_height, h.grid_width)
        if coder in (CODER_CONTEXT, CODER_NET):
            check(raw_size == 0, f"chunk {n}: payload size does not match the header")
            return self._context_frames(payload, shape, n, coder)
        check(raw_size == (h.chunk_bits(entry.frame_count) + 7) // 8, f"chunk {n}: payload size does not match the header")
        return self._zstd_frames(payload, raw_size, shape, n)

    def _context_frames(self, payload: bytes, shape: tuple[int, int, int, int], n: int, coder: int) -> Iterator[np.ndarray]:
        model = self.entropy_model
        if model is None or model.model_id != self.header.entropy_id:
            raise ModelError(f"chunk {n} needs entropy model {self.header.entropy_id.hex()}, which was not given")
        if coder == CODER_NET and model.net is None:
            raise ModelError(f"chunk {n} needs the residual network of entropy model {model.model_id.hex()}, which it lacks")
        model = model if coder == CODER_NET else model.base()
        check(len(payload) % 4 == 0 and len(payload) <= 2 * int(np.prod(shape)) + 16,
              f"chunk {n}: range-coded payload has an impossible size")  # fmt: skip
        return _guarded(decode_bits(payload, shape, model), n)

    def _zstd_frames(self, payload: bytes, raw_size: int, shape: tuple[int, int, int, int], n: int) -> Iterator[np.ndarray]:
        check_frame(payload, raw_size, f"chunk {n}", raw_size)  # one frame, its size declared: before allocating
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        try:
            written = 0
            with self._decompressor.stream_reader(payload) as stream:
                while piece := stream.read(min(1 << 20, raw_size + 1 - written)):
                    written += len(piece)
                    check(written <= raw_size, f"chunk {n}: payload decompresses to the wrong size")
                    spool.write(piece)
            check(written == raw_size, f"chunk {n}: payload decompresses to the wrong size")
        except zstandard.ZstdError as exc:
            spool.close()
            raise FormatError(f"chunk {n}: cannot decompress payload ({exc})") from None
        except BaseException:
            spool.close()
            raise
        return _plane_frames(spool, shape)

    def read_chunk(self, i: int) -> np.ndarray:
        """All bits of the chunk at position ``i`` of ``chunks``: bool ``b x T' x gh x gw``."""
        return np.stack(list(self.iter_chunk(i)), axis=1)

    def update_for_chunk(self, i: int) -> tuple[int, bytes] | None:
        """``(record number, payload)`` of the decoder update covering chunk number ``i``, or ``None``."""
        starts = [e.first_chunk for e in self.updates]
        at = bisect.bisect_right(starts, i) - 1
        if at < 0 or i >= self.updates[at].first_chunk + self.updates[at].chunk_count:
            return None
        e = self.updates[at]
        fields, payload = self._read_record(e.offset, e.size, f"decoder update (record {e.record})",
                                            self.limits.max_update_payload)
        check(fields[1:6] == (TYPE_UPDATE, 0, e.record, e.first_chunk, e.chunk_count),
              f"decoder update (record {e.record}): header does not match the index")  # fmt: skip
        return e.record, payload

    def chunks_for_frames(self, start: int, count: int) -> list[ChunkEntry]:
        """The chunks that hold frames ``start .. start+count-1``."""
        end = start + count
        return [c for c in self.chunks if c.first_frame < end and c.first_frame + c.frame_count > start]


def _index_rows(file: BinaryIO, count: int, row: struct.Struct) -> Iterator[tuple]:
    """``count`` index rows read from ``file``'s position a block at a time."""
    per_block = max(1, INDEX_BLOCK // row.size)
    for start in range(0, count, per_block):
        data = file.read(row.size * min(per_block, count - start))
        yield from row.iter_unpack(data)


def _guarded(frames: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """The range decoder's failures on a hostile (CRC-valid) payload, as ``FormatError``."""
    try:
        yield from frames
    except (ValueError, RuntimeError, OverflowError, AssertionError) as exc:  # constriction asserts on some
        raise FormatError(f"chunk {n}: range-coded payload is invalid ({exc})") from None


def _plane_frames(spool, shape: tuple[int, int, int, int]) -> Iterator[np.ndarray]:
    """Latent frames of bit-plane-major packed bits (FORMAT.md, "Chunk payload") held in ``spool``."""
    b, latent, h, w = shape
    tokens = h * w
    with spool:
        for t in range(latent):
            frame = np.empty((b, tokens), dtype=bool)
            for k in range(b):
                first = (k * latent + t) * tokens
                spool.seek(first // 8)
                raw = np.frombuffer(spool.read((first % 8 + tokens + 7) // 8), dtype=np.uint8)
                frame[k] = np.unpackbits(raw, bitorder="little")[first % 8 : first % 8 + tokens]
            yield frame.reshape(b, h, w)
