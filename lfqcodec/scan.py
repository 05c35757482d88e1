"""Salvage: find the intact chunks (1.x) or records (2.0) of a file whose index is damaged or
missing, by their magic and header checksum (``docs/FORMAT.md``, "Salvage"). The file is read in
blocks, so memory stays bounded whatever its size."""

from __future__ import annotations

import zlib
from typing import BinaryIO

from .header import StreamHeader
from .records import (
    CHUNK_MAGIC, CHUNK_V1, CRC, RECORD, RECORD_MAGIC, SKIPPABLE, TYPE_CHUNK, TYPE_UPDATE, ChunkEntry, RecordEntry,
)  # fmt: skip

BLOCK = 16 << 20


def _candidates(file: BinaryIO, start: int, end: int, magic: bytes):
    """Offsets of ``magic`` in ``file[start:end]``, read a block at a time; the caller may ``send``
    the offset to resume from (to skip over a record it accepted)."""
    position = start
    while position < end:
        file.seek(position)
        block = file.read(min(BLOCK, end - position))
        at = block.find(magic)
        if at < 0:
            position += max(1, len(block) - len(magic) + 1)
            continue
        resume = yield position + at
        position = resume if resume is not None else position + at + 1


def _frames_ok(h: StreamHeader, index: int, first: int, frames: int) -> bool:
    if h.cut_chunks:
        return first < h.frame_count and 1 <= frames <= min(h.gop, h.frame_count - first)
    return first == index * h.gop and frames == min(h.gop, h.frame_count - first)


def scan_records(file: BinaryIO, file_size: int, h: StreamHeader, header_size: int
                 ) -> tuple[list[ChunkEntry], list[RecordEntry]]:  # fmt: skip
    """Chunks (in order, disjoint in time, at most one per number) and decoder updates found."""
    v2 = h.version[0] == 2
    head_struct = RECORD if v2 else CHUNK_V1
    head_size = head_struct.size + CRC.size
    found: dict[int, ChunkEntry] = {}
    updates: dict[int, RecordEntry] = {}
    scanner = _candidates(file, header_size, file_size, RECORD_MAGIC if v2 else CHUNK_MAGIC)
    offset = next(scanner, None)
    while offset is not None:
        file.seek(offset)
        data = file.read(head_size)
        accepted = None
        if len(data) == head_size and zlib.crc32(data[: head_struct.size]) == CRC.unpack_from(data, head_struct.size)[0]:
            fields = head_struct.unpack_from(data)
            if v2:
                _, kind, coder, record, first_chunk, count, first, frames, _, _, payload_size, _ = fields
            else:
                _, first_chunk, first, frames, _, payload_size, _, _ = fields
                kind, coder, record, count = TYPE_CHUNK, 0, -1, 0
            size = head_size + payload_size
            if offset + size <= file_size:
                if kind == TYPE_CHUNK and first_chunk < h.chunk_count and _frames_ok(h, first_chunk, first, frames):
                    found.setdefault(first_chunk, ChunkEntry(first_chunk, offset, size, first, frames, record,
                                                             count - 1 if v2 else -1, coder))  # fmt: skip
                    accepted = offset + size
                elif kind == TYPE_UPDATE and v2 and count >= 1 and first_chunk + count <= h.chunk_count:
                    updates.setdefault(record, RecordEntry(record, kind, offset, size, first_chunk, count))
                    accepted = offset + size
                elif kind >= SKIPPABLE and v2:
                    accepted = offset + size
        try:
            offset = scanner.send(accepted)
        except StopIteration:
            offset = None
    chunks, covered = [], 0
    for i in sorted(found):  # keep chunks in order and disjoint in time
        if found[i].first_frame >= covered:
            chunks.append(found[i])
            covered = found[i].first_frame + found[i].frame_count
    others, end = [], 0
    for record in sorted(updates, key=lambda r: updates[r].first_chunk):  # disjoint ranges
        if updates[record].first_chunk >= end:
            others.append(updates[record])
            end = updates[record].first_chunk + updates[record].chunk_count
    return chunks, others
