"""Binary layout of the ``.lfq`` structures after the header: 1.x chunk headers, 2.0 records, both
chunk indexes and the trailer (``docs/FORMAT.md``, "Chunks", "Records", "Chunk index",
"Trailer"), and the entries a reader builds from them."""

from __future__ import annotations

import array
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CHUNK_MAGIC = b"LFQC"  # 1.x chunk header
RECORD_MAGIC = b"LFQR"  # 2.0 record header
INDEX_MAGIC = b"LFQI"
TRAILER_MAGIC = b"LFQ!"

TYPE_CHUNK = 0  # token bits of one chunk
TYPE_UPDATE = 1  # a decoder update for a run of chunks (must be understood)
SKIPPABLE = 0x8000  # types >= this may be skipped by a reader that does not know them

CHUNK_V1 = struct.Struct("<4sIIIIIII")  # magic, chunk, first frame, frames, latent, payload, raw, payload CRC
RECORD = struct.Struct("<4sHHIIIIIIIII")  # magic, type, coder, record, first chunk, count/update, first frame,
# frames, latent frames, raw size, payload size, payload CRC
INDEX_HEAD = struct.Struct("<4sI")
INDEX_V1 = struct.Struct("<QQII")  # offset, size, first frame, frames
INDEX_V2 = struct.Struct("<QQHHIIII")  # offset, size, type, coder, first chunk, count/update, first frame, frames
TRAILER = struct.Struct("<Q4sI")
CRC = struct.Struct("<I")


@dataclass(frozen=True, slots=True)  # slots: one per chunk of the file, millions in a hostile one
class ChunkEntry:
    index: int  # chunk number
    offset: int  # byte offset of the chunk header / record in the file
    size: int  # bytes: header + payload
    first_frame: int
    frame_count: int
    record: int = -1  # 2.0: record number
    update: int = -1  # 2.0: record number of the decoder update that covers it, -1 for none
    coder: int = 0  # 0: zstd bit planes, 1: context model


class ChunkTable(Sequence):
    """The chunks of a file, in order, as a sequence of :class:`ChunkEntry`: held as 8 int64 a chunk
    (64 bytes, not a Python object each), so a file of millions of tiny chunks stays small."""

    WIDTH = 8  # fields of ChunkEntry

    def __init__(self, entries: Iterable[ChunkEntry] = ()):
        self.rows = array.array("q")
        for entry in entries:
            self.append(entry)

    def append(self, entry: ChunkEntry) -> None:
        e = entry
        self.rows.extend((e.index, e.offset, e.size, e.first_frame, e.frame_count, e.record, e.update, e.coder))

    def __len__(self) -> int:
        return len(self.rows) // self.WIDTH

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError("chunk position out of range")
        at = (i % n) * self.WIDTH
        return ChunkEntry(*self.rows[at : at + self.WIDTH])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """A 2.0 record that is not a chunk: a decoder update or a skipped (unknown, skippable) type."""

    record: int
    type: int
    offset: int
    size: int
    first_chunk: int
    chunk_count: int


def payload_cap(kind: int, coder: int, chunk_bits: int, limits) -> int:
    """Most payload bytes a record may hold (FORMAT.md, "Limits"), checked before it is read:
    ``chunk_bits`` is ``b * L * gh * gw`` of a chunk; skipped types are never read."""
    if kind == TYPE_UPDATE:
        return limits.max_update_payload
    if kind == TYPE_CHUNK:
        return limits.max_chunk_payload if coder == 0 else min(limits.max_chunk_payload, 2 * chunk_bits + 16)
    return 1 << 32


def with_crc(body: bytes) -> bytes:
    return body + CRC.pack(zlib.crc32(body))


def record_header(kind: int, coder: int, record: int, first_chunk: int, count: int, first_frame: int, frames: int,
                  latent: int, raw: int, payload: bytes) -> bytes:  # fmt: skip
    return with_crc(RECORD.pack(RECORD_MAGIC, kind, coder, record, first_chunk, count, first_frame, frames, latent,
                                raw, len(payload), zlib.crc32(payload)))  # fmt: skip


def chunk_header_v1(entry: ChunkEntry, latent: int, raw: int, payload: bytes) -> bytes:
    return with_crc(CHUNK_V1.pack(CHUNK_MAGIC, entry.index, entry.first_frame, entry.frame_count, latent,
                                  len(payload), raw, zlib.crc32(payload)))  # fmt: skip


def index_bytes(version: int, chunks: list[ChunkEntry], others: list[RecordEntry]) -> bytes:
    if version == 1:
        body = INDEX_HEAD.pack(INDEX_MAGIC, len(chunks)) + b"".join(
            INDEX_V1.pack(e.offset, e.size, e.first_frame, e.frame_count) for e in chunks)
        return with_crc(body)
    rows = [(e.record, INDEX_V2.pack(e.offset, e.size, TYPE_CHUNK, e.coder, e.index, e.update + 1, e.first_frame,
                                     e.frame_count)) for e in chunks]  # fmt: skip
    rows += [(e.record, INDEX_V2.pack(e.offset, e.size, e.type, 0, e.first_chunk, e.chunk_count, 0, 0)) for e in others]
    body = INDEX_HEAD.pack(INDEX_MAGIC, len(rows)) + b"".join(row for _, row in sorted(rows))
    return with_crc(body)


def trailer_bytes(index_offset: int) -> bytes:
    return with_crc(struct.pack("<Q4s", index_offset, TRAILER_MAGIC))
