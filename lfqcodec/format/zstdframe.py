"""Exactly one zstd frame (RFC 8878, "Zstandard Frames"): the checks a ``.lfq`` reader makes on a
zstd payload before it decompresses anything (``docs/FORMAT.md``, "Payloads end where their stream
ends"). python-zstandard allocates the size a frame declares and ignores bytes after the frame, so
both are checked here: the declared content size against the expected size, and the frame's
compressed length against the payload's."""

from __future__ import annotations

import zstandard

from ..base.errors import FormatError

MAGIC = b"\x28\xb5\x2f\xfd"  # 0xFD2FB528, little-endian
_RLE, _RESERVED = 1, 3  # block types


def frame_length(data: bytes) -> int:
    """Compressed bytes of the zstd frame at the start of ``data``, walked block header by block
    header (3 bytes each: last-block bit, type, size); raises ``ValueError`` when the frame is
    malformed or ends after ``data``. Time is linear in the number of blocks, at most ``len(data) / 3``."""
    if data[:4] != MAGIC:
        raise ValueError("not a zstd frame")
    try:
        at = zstandard.frame_header_size(data)
    except zstandard.ZstdError as exc:
        raise ValueError(str(exc)) from None
    checksum = data[4] >> 2 & 1  # Frame_Header_Descriptor: Content_Checksum_flag
    view = memoryview(data)
    while True:
        if at + 3 > len(data):
            raise ValueError("the frame ends inside a block header")
        head = int.from_bytes(view[at : at + 3], "little")
        kind, size = head >> 1 & 3, head >> 3
        if kind == _RESERVED:
            raise ValueError("reserved block type")
        at += 3 + (1 if kind == _RLE else size)
        if head & 1:
            break
    at += 4 * checksum
    if at > len(data):
        raise ValueError("the frame ends after the payload")
    return at


def check_frame(data: bytes, content_size: int | None, what: str, max_content: int) -> int:
    """Check that ``data`` is one zstd frame and nothing else, that it declares its content size
    (equal to ``content_size`` when given, at most ``max_content``) and a content checksum; returns
    the declared size. Messages start with ``what``."""
    try:
        length = frame_length(data)
        declared = zstandard.frame_content_size(data)
        has_checksum = zstandard.get_frame_parameters(data).has_checksum
    except (ValueError, zstandard.ZstdError) as exc:
        raise FormatError(f"{what}: cannot decompress payload ({exc})") from None
    if declared < 0 or (content_size is not None and declared != content_size) or declared > max_content:
        raise FormatError(f"{what}: payload declares the wrong size")  # before anything is allocated
    if not has_checksum:
        raise FormatError(f"{what}: payload's zstd frame has no content checksum")
    if length != len(data):
        raise FormatError(f"{what}: payload has {len(data) - length} bytes after the end of its zstd frame")
    return declared
