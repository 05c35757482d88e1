"""Salvage planning and its report (``docs/FORMAT.md``, "Salvage"): which frame spans a decode
covers, whether the gaps are few enough to fill, and every frame invented and every record skipped
or not trusted, said in the report.

Planning takes time proportional to the intact chunks in the asked range, never to the frame count
a header claims: gaps are counted by arithmetic, and a plan that cannot meet the bound is refused
before any frame is decoded.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field

from .container import LfqReader
from ..base.errors import FormatError


def _first_in(reader: LfqReader, start: int) -> int:
    """Position in ``reader.chunks`` of the first chunk that ends after frame ``start``."""
    return bisect.bisect_left(reader.chunks, start, key=lambda c: c.first_frame + c.frame_count - 1)


def chunk_spans(reader: LfqReader, start: int = 0, end: int | None = None) -> Iterator[tuple[int | None, int, int]]:
    """``(position in reader.chunks or None when missing, first frame, frame count)`` covering frames
    ``start .. end - 1`` in order, up to the last intact chunk. A chunk's span is the whole chunk
    (it may begin before ``start``); only a salvage reader has gaps, each clipped to the range and
    split at chunk boundaries when the chunk length is fixed."""
    h = reader.header
    end = h.frame_count if end is None else end
    position = _first_in(reader, start)
    covered = start

    def gap(until: int) -> Iterator[tuple[None, int, int]]:
        at = covered
        while at < until:
            stop = until if h.cut_chunks else min(until, (at // h.gop + 1) * h.gop)
            yield None, at, stop - at
            at = stop

    for position in range(position, len(reader.chunks)):
        entry = reader.chunks[position]
        if entry.first_frame >= end:
            break
        yield from gap(entry.first_frame)
        yield position, entry.first_frame, entry.frame_count
        covered = entry.first_frame + entry.frame_count


@dataclass
class SalvageLog:
    """What a salvage decode of frames ``start .. end - 1`` found: planned on creation (refused
    when the bound cannot hold), then told of every chunk that fails; ``lines()`` is its report."""

    reader: LfqReader
    start: int
    end: int
    recovered: int = 0  # frames of the range in chunks not (yet) found damaged
    missing: int = 0  # frames of the range to be invented
    stop: int = 0  # output ends here: the last intact chunk's end, at most ``end``
    invented: list[tuple[int, int, str]] = field(default_factory=list)  # (first, last, why)
    notes: list[str] = field(default_factory=list)
    decoded: int = 0  # chunks decoded

    def __post_init__(self) -> None:
        reader, start = self.reader, self.start
        if not reader.chunks:
            raise FormatError("no intact chunk found: nothing to salvage")
        last = reader.chunks[-1].first_frame + reader.chunks[-1].frame_count
        self.stop = min(self.end, last)
        if self.stop <= start:
            raise FormatError(f"no intact chunk holds frames {start}..{self.end - 1}: nothing to salvage")
        for position in range(_first_in(reader, start), len(reader.chunks)):
            entry = reader.chunks[position]
            if entry.first_frame >= self.stop:
                break
            self.recovered += min(entry.first_frame + entry.frame_count, self.stop) - max(entry.first_frame, start)
        self.missing = self.stop - start - self.recovered
        self._check_bound()
        if reader.index_damage:
            self.notes.append(f"chunk index not used ({reader.index_damage}): chunks found by scanning")
        self.notes.extend(reader.notes.all() if reader.notes else [])

    def _check_bound(self) -> None:
        if self.missing > self.recovered + self.reader.header.gop:
            raise FormatError(f"only {self.recovered} frames of {self.start}..{self.stop - 1} are intact; salvage "
                              f"will not synthesise the {self.missing} lost ones")  # fmt: skip

    def lost_tail(self) -> list[tuple[int, int]]:
        """Frames after the last intact chunk: reported lost, not synthesised."""
        return [(self.stop, self.end - 1)] if self.end > self.stop else []

    def fill(self, first: int, count: int, why: str, damaged: bool) -> tuple[int, int]:
        """Frames ``first .. first + count - 1`` (clipped to the range) will be invented because of
        ``why``; ``damaged``: they belong to a chunk that was counted as recovered. Returns the
        clipped ``(first, last)``; refuses when the bound no longer holds."""
        lo, hi = max(first, self.start), min(first + count, self.stop)
        if damaged:
            self.recovered -= hi - lo
            self.missing += hi - lo
            self._check_bound()
        self.invented.append((lo, hi - 1, why))
        return lo, hi - 1

    def note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)

    def finish(self) -> None:
        if not self.decoded:
            raise FormatError("no intact chunk found: nothing to salvage")

    def lines(self) -> list[str]:
        """The report: every invented frame range and why, the frames left out, each record skipped
        or not trusted."""
        out = [f"frames {a}-{b} invented (repeat the last good frame, mid-grey before the first): {why}"
               for a, b, why in self.invented]  # fmt: skip
        out += [f"frames {a}-{b} after the last intact chunk left out" for a, b in self.lost_tail()]
        return out + self.notes
