"""What is in an ``.lfq`` file without the network: ``read_info`` (``lfqcodec info``) and the token
indices (``lfqcodec tokens``), streamed one latent frame at a time into the ``.npz`` output."""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..base.atomic import atomic_output, check_destination
from .decoding import DEFAULT_MAX_PIXELS, check_size, open_reader
from ..base.errors import LfqError
from ..format.header import CODER_ZSTD
from ..format.records import TYPE_UPDATE

CODERS = {0: "zstd bit planes", 1: "context model + range coder", 2: "context model with network + range coder"}


def _design(model_id: bytes) -> str | None:
    """The quantizer design of the installed model with this id (which bits are signs, which residual)."""
    from ..model.checkpoint import installed_config

    config = installed_config(model_id)
    return config.design if config is not None else None


class ChunkRows(Sequence):
    """The chunk table of :func:`read_info`: one dict per chunk, made when asked for. The reader holds
    a chunk in 64 bytes (:class:`lfqcodec.format.records.ChunkTable`), so a file of millions of tiny
    chunks costs that, not a dict each; ``list(rows)`` makes them all."""

    def __init__(self, chunks: Sequence, header, record_head: int):
        self.chunks, self.header, self.record_head = chunks, header, record_head

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        c, h = self.chunks[i], self.header
        return {
            "index": c.index,
            "offset": c.offset,
            "bytes": c.size,
            "first_frame": c.first_frame,
            "frames": c.frame_count,
            "coder": CODERS[c.coder],
            "coded_bits_per_token": (c.size - self.record_head) * 8
            / (h.latent_frames(c.frame_count) * h.grid_height * h.grid_width),
            "update": c.update if c.update >= 0 else None,
        }


def read_info(path: str | os.PathLike) -> dict:
    """Header, model, duration, bitrate, coder, chunk table and decoder updates of an ``.lfq`` file.
    ``chunks`` is a :class:`ChunkRows` (a sequence of dicts, made as read); ``coders`` counts the
    chunks by coder name."""
    reader, handle = open_reader(path)
    with handle:
        h = reader.header
        size = reader.file_size
        duration = float(h.frame_count / h.fps) if h.frame_count else 0.0
        head = 48 if reader.v2 else 36  # record / chunk header bytes (FORMAT.md)
        updates = [e for e in reader.others if e.type == TYPE_UPDATE]
        coders = Counter(c.coder for c in reader.chunks)
        return {
            "file": str(path),
            "format_version": reader.version,
            "file_bytes": size,
            "model": {"name": h.metadata.get("model_name"), "id": h.model_id.hex(), "design": _design(h.model_id)},
            "entropy_model": h.entropy_id.hex() if reader.v2 else None,
            "quality": h.metadata.get("quality"),
            "preset": h.metadata.get("preset"),
            "width": h.width,
            "height": h.height,
            "frame_count": h.frame_count,
            "fps": f"{h.fps.numerator}/{h.fps.denominator}",
            "time_base": f"{h.time_base.numerator}/{h.time_base.denominator}",
            "duration_s": duration,
            "bits_per_token": h.bits,
            "model_bits": h.model_bits,
            "latent_grid": [h.grid_height, h.grid_width],
            "factors": {"temporal": h.temporal_factor, "spatial": h.spatial_factor},
            "gop": h.gop,
            "bits_per_pixel": size * 8 / max(1, h.width * h.height * h.frame_count),
            "kbit_per_second": size * 8 / 1000 / duration if duration else 0.0,
            "metadata": h.metadata,
            "updates": {
                "count": len(updates),
                "bytes": sum(e.size for e in updates),
                "chunks_covered": sum(e.chunk_count for e in updates),
                "records": [{"record": e.record, "bytes": e.size, "first_chunk": e.first_chunk,
                             "chunks": e.chunk_count} for e in updates],  # fmt: skip
            },
            "skipped_records": [{"record": e.record, "type": e.type, "bytes": e.size}
                                for e in reader.others if e.type != TYPE_UPDATE],  # fmt: skip (the first 100)
            "skipped_count": reader.skipped[0],
            "skipped_bytes": reader.skipped[1],
            "coders": {CODERS[coder]: count for coder, count in sorted(coders.items())},
            "context_coded_chunks": sum(count for coder, count in coders.items() if coder != CODER_ZSTD),
            "chunks": ChunkRows(reader.chunks, h, head),
        }


@dataclass(frozen=True)
class Tokens:
    """Token indices of a whole file. ``indices`` is int64 ``T' x gh x gw`` (chunks concatenated in
    time; ``chunk_starts[i]`` is chunk ``i``'s first latent frame); ``sub_indices`` adds a last axis
    of factorized sub-tokens when asked for; ``meta`` holds what exact decoding needs (token format 2,
    docs/TOKENS.md: model, exact frame rate, size, each chunk's frames)."""

    indices: np.ndarray
    bits: int
    chunk_starts: np.ndarray
    sub_indices: np.ndarray | None = None
    sub_bits: int | None = None
    meta: dict = field(default_factory=dict)


def _indices(frame: np.ndarray) -> np.ndarray:
    """Bits ``b x gh x gw`` -> int64 indices ``gh x gw`` (bit ``i`` has weight ``2^i``)."""
    indices = np.zeros(frame.shape[1:], dtype=np.int64)
    for k in range(frame.shape[0]):  # plane by plane: memory two index arrays, not b
        indices |= frame[k].astype(np.int64) << k
    return indices


def _factorize(indices: np.ndarray, bits: int, sub_bits: int) -> np.ndarray:
    shifts = np.arange(-(-bits // sub_bits), dtype=np.int64) * sub_bits
    return (indices[..., None] >> shifts) & ((1 << sub_bits) - 1)


def _latent_frames(path, max_pixels: int | None) -> Iterator[tuple[int, np.ndarray]]:
    """``(chunk position, bits of one latent frame)`` over the whole file, in order."""
    reader, handle = open_reader(path, entropy=True)
    with handle:
        check_size(reader.header, max_pixels)
        for position in range(len(reader.chunks)):
            for frame in reader.iter_chunk(position):
                yield position, frame


TOKENS_FORMAT = "lfqcodec-tokens-v2"  # the ``format`` member of a token .npz (version 1 had none)


def _plan(path, sub_bits: int | None, max_pixels: int | None) -> tuple[dict, np.ndarray, int, int]:
    """``(meta, chunk_starts, latent frames, bits)``: ``meta`` holds what exact decoding needs
    (docs/TOKENS.md, "Token files"): the model, the exact frame rate, size and each chunk's frames."""
    reader, handle = open_reader(path)
    with handle:
        h = reader.header
        check_size(h, max_pixels)
        if sub_bits is not None and not 1 <= sub_bits <= h.bits:
            raise LfqError(f"sub-token size {sub_bits} outside 1..{h.bits}")
        latent = [h.latent_frames(c.frame_count) for c in reader.chunks]
        meta = {"format": TOKENS_FORMAT, "width": h.width, "height": h.height, "frame_count": h.frame_count,
                "gop": h.gop, "temporal_factor": h.temporal_factor, "spatial_factor": h.spatial_factor,
                "model_id": h.model_id.hex(), "model_name": h.metadata.get("model_name", ""),
                "model_bits": h.model_bits, "quality": h.metadata.get("quality", ""),
                "fps": np.array([h.fps.numerator, h.fps.denominator], dtype=np.int64),
                "chunk_frames": np.array([c.frame_count for c in reader.chunks], dtype=np.int64),
                "decoder_updates": sum(c.update >= 0 for c in reader.chunks)}  # fmt: skip
        starts = np.cumsum([0] + latent[:-1]).astype(np.int64) if latent else np.zeros(0, np.int64)
        return meta, starts, sum(latent), h.bits


def _member_value(value) -> np.ndarray:
    """A metadata value as the array an ``.npz`` member holds (text as a unicode scalar: no pickle)."""
    if isinstance(value, str):
        return np.array(value)
    return np.asarray(value, dtype=np.int64)


def read_tokens(path: str | os.PathLike, sub_bits: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tokens:
    """Token indices (bit ``i`` = channel ``i``, LSB first) of every chunk of ``path``, in memory.
    Files whose frames have more than ``max_pixels`` pixels are refused (0 or ``None``: no limit)."""
    meta, starts, _, bits = _plan(path, sub_bits, max_pixels)
    frames = [_indices(frame) for _, frame in _latent_frames(path, max_pixels)]
    indices = np.stack(frames) if frames else np.zeros((0, 0, 0), dtype=np.int64)
    sub = _factorize(indices, bits, sub_bits) if sub_bits else None
    return Tokens(indices, bits, starts, sub, sub_bits, meta)


def _write_member(archive: zipfile.ZipFile, name: str, shape: tuple, frames: Iterator[np.ndarray]) -> None:
    """One ``.npy`` member of an ``.npz``, written one latent frame at a time."""
    with archive.open(f"{name}.npy", "w", force_zip64=True) as out:
        np.lib.format.write_array_header_2_0(out, {"descr": "<i8", "fortran_order": False, "shape": shape})
        for frame in frames:
            out.write(np.ascontiguousarray(frame, dtype="<i8").tobytes())


def export_tokens(src: str | os.PathLike, dst: str | os.PathLike, sub_bits: int | None = None, overwrite: bool = False,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[tuple[int, ...], int]:  # fmt: skip
    """Write the arrays of :func:`read_tokens` to an ``.npz`` file, streaming: memory is a latent
    frame, whatever the file's length. Returns the indices' shape and bits per token. The file is
    token format 2 (``format`` = :data:`TOKENS_FORMAT`): with the model, exact frame rate, size and
    chunk frame counts that ``lfqcodec detokenize`` needs; ``decoder_updates`` counts the chunks
    that decode with a decoder update (presets slow, veryslow), which token files do not hold."""
    dst = check_destination(dst, overwrite, (src,), suffix=".npz")
    meta, starts, total, bits = _plan(src, sub_bits, max_pixels)
    reader, handle = open_reader(src)
    with handle:
        grid = (reader.header.grid_height, reader.header.grid_width)
    arrays = {"bits": np.int64(bits), "chunk_starts": starts, **{k: _member_value(v) for k, v in meta.items()}}
    if sub_bits:
        arrays["sub_bits"] = np.int64(sub_bits)
    with atomic_output(dst) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        _write_member(archive, "indices", (total, *grid), (_indices(f) for _, f in _latent_frames(src, max_pixels)))
        if sub_bits:
            n_sub = -(-bits // sub_bits)
            frames = (_factorize(_indices(f), bits, sub_bits) for _, f in _latent_frames(src, max_pixels))
            _write_member(archive, "sub_indices", (total, *grid, n_sub), frames)
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w") as out:
                np.lib.format.write_array(out, np.asarray(value))
    return (total, *grid), bits
