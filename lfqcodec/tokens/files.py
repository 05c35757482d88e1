"""Reading token files for ``lfqcodec detokenize``: :class:`TokenInput` (what a token file records) and
the ``.npz`` of ``lfqcodec tokens`` (or any ``.npz`` with an ``indices`` or ``sub_indices`` array); rows of
the Parquet shards of ``lfqcodec tokenize`` are read by :mod:`lfqcodec.tokens.shards` (docs/TOKENS.md,
"Token files").

What a file records is read up front (small arrays, the shard's metadata columns); the indices are
read one latent frame at a time from the ``.npz`` (an ``.npy`` member is a header and the raw
array, so it streams) and one row at a time from a shard. Every problem is one :class:`LfqError`
line: not integers, the wrong shape, values out of range, sub-tokens that do not make tokens, a
row that does not exist.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..base.errors import LfqError

NPZ_FORMAT = "lfqcodec-tokens-v2"  # lfqcodec.codec.fileinfo.TOKENS_FORMAT (not imported: it pulls in the container)
_METADATA = {"format", "bits", "sub_bits", "width", "height", "fps", "frame_count", "gop", "chunk_frames",
             "chunk_starts", "model_id", "model_name", "quality", "temporal_factor", "spatial_factor", "model_bits",
             "decoder_updates"}  # the members read besides the indices; others are left alone  # fmt: skip


@dataclass
class TokenInput:
    """What a token file records (``None``: not recorded) and its latent frames of indices."""

    source: str  # the file (and rows) named in messages
    version: int  # token format: 2, 1 (an older lfqcodec), 0 (an array without lfqcodec's metadata)
    shape: tuple[int, int, int]  # T' x h x w
    frames: Callable[[], Iterator[np.ndarray]]  # the latent frames (h x w integers), in order
    bits: int | None = None
    width: int | None = None
    height: int | None = None
    fps: Fraction | None = None
    frame_count: int | None = None
    gop: int | None = None
    chunk_frames: list[int] | None = None
    chunk_starts: list[int] | None = None
    model_id: bytes | None = None
    model_name: str = ""
    quality: str = ""
    factors: dict[str, int] = field(default_factory=dict)  # temporal_factor, spatial_factor, model_bits recorded
    decoder_updates: int = 0  # chunks of the source file that decode with a decoder update


def _int(value: np.ndarray, name: str, src: str) -> int:
    if value.shape != () or value.dtype.kind not in "iu":
        raise LfqError(f"{src}: {name} is not an integer")
    return int(value)


def _text(value: np.ndarray) -> str:
    return str(value) if value.shape == () and value.dtype.kind == "U" else ""


def read_npz(path: Path) -> TokenInput:
    """The arrays ``lfqcodec tokens`` writes (format 2; version 1 had no ``format`` member), or any
    ``.npz`` with ``indices`` (``T' x h x w``) or ``sub_indices`` (``T' x h x w x n``) and ``sub_bits``."""
    src = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise LfqError(f"no such file: {path}") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise LfqError(f"cannot read {path} as an .npz file: {getattr(exc, 'strerror', None) or exc}") from None
    with archive:
        names = {n.removesuffix(".npy") for n in archive.namelist()}
        if not names & {"indices", "sub_indices"}:
            raise LfqError(f"{src} holds no indices or sub_indices array")
        small = {n: _small(archive, n, src) for n in names & _METADATA}
        if "indices" in names:
            member, sub_bits = "indices", None
        elif "sub_indices" in names:
            member = "sub_indices"
            if "sub_bits" not in small:
                raise LfqError(f"{src}: sub_indices without sub_bits (bits per sub-token)")
            sub_bits = _int(small["sub_bits"], "sub_bits", src)
        else:
            raise LfqError(f"{src} holds no indices or sub_indices array")
        shape, _, dtype = _member_header(archive, member, src)
        stored = archive.getinfo(f"{member}.npy" if f"{member}.npy" in archive.namelist() else member).file_size
    _check_shape(shape, 4 if sub_bits else 3, member, src)
    if int(np.prod(shape, dtype=object)) * dtype.itemsize > stored:  # before any size is trusted
        raise LfqError(f"{src}: {member} claims {'x'.join(map(str, shape))} values, more than its {stored} bytes hold")
    if dtype.kind not in "iu":
        raise LfqError(f"{src}: {member} are {dtype}, not integers (token indices are non-negative integers)")
    fmt = _text(small.get("format", np.array(0)))
    if fmt and fmt != NPZ_FORMAT:
        raise LfqError(f"{src} is token format {fmt!r}, which this lfqcodec does not read (it reads {NPZ_FORMAT})")
    get = lambda name: _int(small[name], name, src) if name in small else None  # noqa: E731
    bits = get("bits")
    if sub_bits is not None:
        if not 1 <= sub_bits <= 62:
            raise LfqError(f"{src}: sub_bits {sub_bits} outside 1..62")
        if bits is not None and shape[3] != -(-bits // sub_bits):
            raise LfqError(f"{src}: {shape[3]} sub-tokens of {sub_bits} bits do not make {bits}-bit tokens "
                           f"({-(-bits // sub_bits)} do)")  # fmt: skip
        bits = bits if bits is not None else shape[3] * sub_bits
    version = 2 if fmt else 1 if "bits" in small and "chunk_starts" in small else 0
    fps = None
    if "fps" in small:
        num, den = (int(v) for v in small["fps"].reshape(-1)[:2]) if small["fps"].size == 2 else (0, 0)
        if num <= 0 or den <= 0:
            raise LfqError(f"{src}: frame rate {small['fps'].tolist()} is not a positive fraction")
        fps = Fraction(num, den)
    listed = lambda name: [int(v) for v in small[name].reshape(-1)] if name in small else None  # noqa: E731

    def frames() -> Iterator[np.ndarray]:
        with zipfile.ZipFile(path) as archive:
            yield from _member_frames(archive, member, src, sub_bits)

    return TokenInput(
        src, version, tuple(shape[:3]), frames, bits, get("width"), get("height"), fps, get("frame_count"),
        get("gop"), listed("chunk_frames"), listed("chunk_starts"),
        bytes.fromhex(_text(small["model_id"])) if "model_id" in small else None,
        _text(small.get("model_name", np.array(0))), _text(small.get("quality", np.array(0))),
        {k: get(k) for k in ("temporal_factor", "spatial_factor", "model_bits") if k in small},
        get("decoder_updates") or 0,
    )  # fmt: skip


def _check_shape(shape: tuple, ndim: int, member: str, src: str) -> None:
    if len(shape) != ndim:
        want = "T' x h x w" + (" x n" if ndim == 4 else "")
        raise LfqError(f"{src}: {member} has shape {'x'.join(map(str, shape)) or '()'}, expected {want}")
    if not all(shape):
        raise LfqError(f"{src}: {member} is empty ({'x'.join(map(str, shape))})")


def _small(archive: zipfile.ZipFile, name: str, src: str) -> np.ndarray:
    """A metadata member (a few values): loaded whole, never with pickle."""
    info = archive.getinfo(f"{name}.npy") if f"{name}.npy" in archive.namelist() else archive.getinfo(name)
    if info.file_size > 1 << 20:
        raise LfqError(f"{src}: member {name!r} is {info.file_size} bytes, too large for metadata")
    try:
        with archive.open(info) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise LfqError(f"{src}: cannot read member {name!r}: {exc}") from None


def _open_member(archive: zipfile.ZipFile, name: str):
    return archive.open(f"{name}.npy" if f"{name}.npy" in archive.namelist() else name)


def _member_header(archive: zipfile.ZipFile, name: str, src: str) -> tuple[tuple, bool, np.dtype]:
    try:
        with _open_member(archive, name) as handle:
            return _read_header(handle)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise LfqError(f"{src}: cannot read member {name!r}: {exc}") from None


def _read_header(handle) -> tuple[tuple, bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(handle)
    if dtype.hasobject:
        raise ValueError("an object array (lfqcodec never reads pickles)")
    return shape, fortran, dtype


def _member_frames(archive: zipfile.ZipFile, name: str, src: str, sub_bits: int | None) -> Iterator[np.ndarray]:
    """The member's latent frames (sub-tokens reassembled into indices), read one at a time."""
    with _open_member(archive, name) as handle:
        shape, fortran, dtype = _read_header(handle)
        per_frame = int(np.prod(shape[1:]))
        if fortran:  # column-major: no frame is contiguous, read the array whole
            count = int(np.prod(shape))
            frames: Iterator[np.ndarray] = iter(_read_frame(handle, dtype, shape[::-1], count, src).T)
        else:
            frames = (_read_frame(handle, dtype, shape[1:], per_frame, src) for _ in range(shape[0]))
        for frame in frames:
            yield frame if sub_bits is None else _join_sub_tokens(frame, sub_bits, src)


def _read_frame(handle, dtype: np.dtype, shape: tuple, count: int, src: str) -> np.ndarray:
    data = handle.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise LfqError(f"{src} is truncated (an array ends early)")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _join_sub_tokens(sub: np.ndarray, sub_bits: int, src: str) -> np.ndarray:
    """``h x w x n`` sub-tokens of ``sub_bits`` bits -> ``h x w`` int64 indices (sub-token ``j`` is
    bits ``j*sub_bits ..``), refusing sub-tokens outside ``[0, 2^sub_bits)``."""
    if sub.size and (sub.min() < 0 or sub.max() >= 1 << sub_bits):
        bad = sub.min() if sub.min() < 0 else sub.max()
        raise LfqError(f"{src}: sub_indices hold {bad}, outside [0, 2^{sub_bits}) for {sub_bits}-bit sub-tokens")
    shifts = np.arange(sub.shape[-1], dtype=np.int64) * sub_bits
    return (sub.astype(np.int64) << shifts).sum(-1)
