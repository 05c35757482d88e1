"""Salvage: find the intact chunks (1.x) or records (2.0) of a file whose index is damaged or
missing, by their magic and header checksum (``docs/FORMAT.md``, "Salvage"). The file is read once,
in blocks, so time is linear in its size and memory bounded whatever it holds; a record is trusted
only when every field the normal reader checks is consistent, and each record found but not used
is noted."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from ..base.errors import FormatError
from .header import CODER_CONTEXT, CODER_NET, CODER_ZSTD, Limits, StreamHeader
from .records import (
    CHUNK_MAGIC, CHUNK_V1, CRC, RECORD, RECORD_MAGIC, SKIPPABLE, TYPE_CHUNK, TYPE_UPDATE, ChunkEntry, ChunkTable,
    RecordEntry, payload_cap,
)  # fmt: skip

BLOCK = 16 << 20
MAX_NOTES = 20  # notes kept word for word; the rest are counted


@dataclass
class Notes:
    """What a salvage reader found but did not use, for its report: at most ``MAX_NOTES`` lines
    and a count of the others (memory stays bounded on a file of millions of records)."""

    lines: list[str] = field(default_factory=list)
    more: int = 0

    def add(self, line: str) -> None:
        if len(self.lines) < MAX_NOTES:
            self.lines.append(line)
        else:
            self.more += 1

    def all(self) -> list[str]:
        return self.lines + ([f"{self.more} more records skipped or not trusted"] if self.more else [])


def _headers(file: BinaryIO, start: int, end: int, magic: bytes, size: int):
    """``(offset, bytes)`` of each ``size``-byte header starting with ``magic`` in ``file[start:end]``
    (shorter at the end of the file). Each byte is read once: a false hit is skipped inside the
    block in memory. The caller may ``send`` an offset to resume from (past a record it accepted)."""
    position = start
    while position < end:
        file.seek(position)
        block = file.read(min(BLOCK, end - position))
        if not block:
            return
        at, moved = block.find(magic), False
        while at >= 0:
            if at + size > len(block) and position + len(block) < end:
                position, moved = position + at, True  # the header crosses the block: read on from it
                break
            resume = yield position + at, block[at : at + size]
            if resume is not None and resume >= position + len(block):
                position, moved = resume, True
                break
            at = block.find(magic, resume - position if resume is not None else at + 1)
        if not moved:
            position += max(1, len(block) - len(magic) + 1)


def _frames_ok(h: StreamHeader, index: int, first: int, frames: int) -> bool:
    if h.cut_chunks:
        return first < h.frame_count and 1 <= frames <= min(h.gop, h.frame_count - first)
    return first == index * h.gop and frames == min(h.gop, h.frame_count - first)


def _chunk_problem(h: StreamHeader, limits: Limits, fields: tuple) -> str | None:
    """Why a 2.0 chunk record with a valid header checksum is not trusted, or None."""
    _, _, coder, _, index, _, first, frames, latent, raw, payload_size, _ = fields
    if index >= h.chunk_count or not _frames_ok(h, index, first, frames) or latent != h.latent_frames(frames):
        return "frame range does not match the header"
    allowed = (CODER_ZSTD, CODER_CONTEXT, CODER_NET)[: 1 + h.coder] if h.entropy_id != bytes(16) else (CODER_ZSTD,)
    if coder not in allowed:
        return f"coder {coder}, which the header does not allow"
    if raw != (0 if coder else (h.chunk_bits(frames) + 7) // 8):
        return "raw size does not match the header"
    if not 0 < payload_size <= payload_cap(TYPE_CHUNK, coder, h.chunk_bits(frames), limits):
        return f"payload of {payload_size} bytes is impossible for it"
    return None


def scan_records(file: BinaryIO, file_size: int, h: StreamHeader, header_size: int, limits: Limits,
                 notes: Notes) -> tuple[ChunkTable, list[RecordEntry]]:  # fmt: skip
    """Chunks (in order, disjoint in time, at most one per number) and decoder updates found; what
    was found but not used goes to ``notes``. A must-understand record of a type this reader does
    not know is refused, as the normal reader refuses it."""
    v2 = h.version[0] == 2
    head_struct = RECORD if v2 else CHUNK_V1
    head_size = head_struct.size + CRC.size
    found, seen = ChunkTable(), set()  # chunk numbers found: grows with the records present, not the header's claim
    updates: dict[int, RecordEntry] = {}
    scanner = _headers(file, header_size, file_size, RECORD_MAGIC if v2 else CHUNK_MAGIC, head_size)
    item = next(scanner, None)
    while item is not None:
        offset, data = item
        accepted = None
        if len(data) == head_size and zlib.crc32(data[: head_struct.size]) == CRC.unpack_from(data, head_struct.size)[0]:
            fields = head_struct.unpack_from(data)
            if v2:
                _, kind, coder, record, first_chunk, count, first, frames, latent, raw, payload_size, _ = fields
            else:
                _, first_chunk, first, frames, latent, payload_size, raw, _ = fields
                kind, coder, record, count = TYPE_CHUNK, CODER_ZSTD, -1, 0
            size = head_size + payload_size
            where = f"record {record} at byte {offset}" if v2 else f"chunk {first_chunk} at byte {offset}"
            if offset + size > file_size:
                notes.add(f"{where}: runs past the end of the file: not used")
            elif kind == TYPE_CHUNK:
                problem = _chunk_problem(h, limits, fields) if v2 else (
                    None if first_chunk < h.chunk_count and _frames_ok(h, first_chunk, first, frames)
                    and latent == h.latent_frames(frames) and raw == (h.chunk_bits(frames) + 7) // 8
                    and 0 < payload_size <= limits.max_chunk_payload else "fields do not match the header")  # fmt: skip
                if problem is not None:
                    notes.add(f"{where} (chunk {first_chunk}): {problem}: not used")
                elif first_chunk in seen:
                    notes.add(f"{where}: a second chunk {first_chunk}: not used")
                    accepted = offset + size
                else:
                    seen.add(first_chunk)
                    found.append(ChunkEntry(first_chunk, offset, size, first, frames, record, count - 1 if v2 else -1,
                                            coder))  # fmt: skip
                    accepted = offset + size
            elif kind == TYPE_UPDATE:
                fields_ok = coder == first == frames == latent == raw == 0 and record not in updates
                if count >= 1 and first_chunk + count <= h.chunk_count and payload_size <= limits.max_update_payload \
                        and fields_ok:  # fmt: skip
                    updates[record] = RecordEntry(record, kind, offset, size, first_chunk, count)
                    accepted = offset + size
                else:
                    notes.add(f"{where}: decoder update with fields out of range: not used")
            elif kind >= SKIPPABLE:
                notes.add(f"{where}: payload type {kind:#x} (ancillary) skipped")
                accepted = offset + size
            else:
                raise FormatError(f"record {record} has payload type {kind}, which this reader does not know and "
                                  "must not skip (a newer format version?)")  # fmt: skip
        try:
            item = scanner.send(accepted)
        except StopIteration:
            item = None
    chunks, covered = ChunkTable(), 0
    numbers = np.frombuffer(found.rows, dtype=np.int64).reshape(-1, ChunkTable.WIDTH)[:, 0]
    for position in numbers.argsort(kind="stable"):  # keep chunks in order and disjoint in time
        entry = found[int(position)]
        if entry.first_frame >= covered:
            chunks.append(entry)
            covered = entry.first_frame + entry.frame_count
        else:
            notes.add(f"chunk {entry.index} at byte {entry.offset}: overlaps an earlier chunk's frames: not used")
    others, end = [], 0
    for record in sorted(updates, key=lambda r: updates[r].first_chunk):  # disjoint ranges
        if updates[record].first_chunk >= end:
            others.append(updates[record])
            end = updates[record].first_chunk + updates[record].chunk_count
        else:
            notes.add(f"decoder update (record {record}): overlaps another update: not used")
    return chunks, others
