"""Token datasets on disk: which clips go in, Parquet shards, and the manifest.

A dataset is a folder::

    OUT/manifest.json          settings, command, counts, shard list, clips that could not be read
    OUT/shard-00000.parquet    one row per clip (or per window of ``clip_frames`` frames of a clip)
    OUT/shard-00001.parquet    ...

Why Parquet: language-model training code reads it directly (``pyarrow``, ``datasets``, ``polars``,
Spark, DuckDB), one column at a time (the ``tokens`` column without the metadata, or the reverse),
with its types and shapes in the file; a shard's footer and page checksums make a damaged shard
detectable, which the resume logic relies on. WebDataset tar shards hold opaque per-sample files
(``.npy``) that need a decoding step and have no index or checksum of their own.

Columns (one row = one clip or one window):

=================  ================  =================================================================
``source``         string            the input file, as found from the command's inputs
``window``         int32             window number inside the clip (0 without ``clip_frames``)
``start_frame``    int64             first source frame of the window
``frame_count``    int32             frames tokenized (the last window of a clip may be shorter)
``width``          int32             source frame size in pixels
``height``         int32
``fps``            double            source frame rate (average rate for variable-rate sources)
``fps_num``        int64             the same rate as an exact fraction (format 2)
``fps_den``        int64
``grid_t``         int32             latent frames (``T'``): ``1 + ceil((frames - 1) / 4)`` per chunk
``grid_h``         int32             latent grid (``ceil(height / 8)``, ``ceil(width / 8)``)
``grid_w``         int32
``chunk_starts``   list<int32>       latent frame where each independently coded chunk starts
``chunk_frames``   list<int32>       frames of each chunk (format 2; a scene-cut chunk is not 1 + 4k)
``tokens``         list<int64>       ``grid_t * grid_h * grid_w`` token indices, ``T' x H' x W'``
                                     row-major (bit ``i`` = latent channel ``i``, LSB first), exactly
                                     what ``lfqcodec tokens`` exports for the same encoding
``sub_tokens``     list<int64>       only with ``sub_bits``: ``T' x H' x W' x n`` factorized sub-tokens
``bits``           int8              bits per token (the quality's)
``sub_bits``       int8              only with ``sub_bits``
``model``          string            model name
``model_id``       string            first 16 bytes of the model's weight hash, hex (as in ``.lfq``)
``quality``        string
=================  ================  =================================================================
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..base.atomic import atomic_output
from ..base.errors import LfqError

FORMAT = "lfqcodec-tokens-v2"  # v2 added fps_num, fps_den, chunk_frames (exact decoding)
FORMATS_READ = ("lfqcodec-tokens-v1", FORMAT)  # what lfqcodec detokenize reads
MANIFEST = "manifest.json"
SHARD_NAME = "shard-{:05d}.parquet"
SHARD_PATTERN = re.compile(r"shard-(\d{5,})\.parquet")
META_KEY = b"lfqcodec.shard"
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".y4m", ".mpg", ".mpeg", ".ts", ".flv",
                  ".wmv", ".ogv", ".3gp"}  # fmt: skip
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def arrow():
    """``pyarrow`` and ``pyarrow.parquet``: an optional dependency (the ``scale`` extra), needed only here."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise LfqError("lfqcodec tokenize needs the scale extra (pyarrow is missing): pip install 'lfqcodec[scale]'") from None
    return pa, pq


def find_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files, folders (searched recursively for videos and images) and glob patterns -> the clips,
    in argument order, sorted within each folder or pattern, each once. A file named explicitly is
    taken whatever its extension; a name that matches nothing is an error."""
    found: dict[str, Path] = {}
    for item in inputs:
        text = str(item)
        pattern = glob.has_magic(text)
        if pattern:
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise LfqError(f"{text} matches nothing")
        elif Path(text).exists():
            matches = [text]
        else:
            raise LfqError(f"no such file or folder: {text}")
        for match in map(Path, matches):
            if match.is_dir():
                files = sorted(p for p in match.rglob("*") if p.is_file() and _is_media(p))
            elif pattern and not _is_media(match):
                files = []  # a pattern like data/* also finds notes and lists: keep media only
            else:
                files = [match]
            for path in files:
                found.setdefault(str(path), path)
    if not found:
        raise LfqError(f"no videos or images found in {', '.join(map(str, inputs))}")
    return list(found.values())


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES and not path.name.startswith(".")


@dataclass(frozen=True)
class ClipJob:
    """One input clip: its position in the dataset and the shard its rows go to."""

    index: int
    shard: int
    source: str


def plan_shards(sources: Sequence[str | os.PathLike], shard_size: int) -> list[list[ClipJob]]:
    """Clips ``i * shard_size ... (i + 1) * shard_size - 1`` go to shard ``i`` (fixed by the input
    order alone, so a rerun finds the same shards)."""
    if shard_size < 1:
        raise LfqError(f"shard size must be >= 1, got {shard_size}")
    jobs = [ClipJob(i, i // shard_size, str(s)) for i, s in enumerate(sources)]
    return [jobs[lo : lo + shard_size] for lo in range(0, len(jobs), shard_size)]


def fingerprint(settings: dict, sources: Sequence[str]) -> str:
    """Hash of what decides a shard's content: the token settings and its clips (in order)."""
    text = json.dumps({"settings": settings, "sources": list(sources)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def shard_path(out: Path, index: int) -> Path:
    return out / SHARD_NAME.format(index)


def _schema(sub_tokens: bool):
    pa, _ = arrow()
    fields = [
        ("source", pa.string()), ("window", pa.int32()), ("start_frame", pa.int64()), ("frame_count", pa.int32()),
        ("width", pa.int32()), ("height", pa.int32()), ("fps", pa.float64()), ("fps_num", pa.int64()),
        ("fps_den", pa.int64()), ("grid_t", pa.int32()), ("grid_h", pa.int32()), ("grid_w", pa.int32()),
        ("chunk_starts", pa.list_(pa.int32())), ("chunk_frames", pa.list_(pa.int32())),
        ("tokens", pa.list_(pa.int64())),
    ]  # fmt: skip
    if sub_tokens:
        fields.append(("sub_tokens", pa.list_(pa.int64())))
    fields += [("bits", pa.int8())]
    if sub_tokens:
        fields.append(("sub_bits", pa.int8()))
    fields += [("model", pa.string()), ("model_id", pa.string()), ("quality", pa.string())]
    return pa.schema(fields)


def rows_to_table(rows: list[dict], sub_tokens: bool, meta: dict):
    """Rows (dicts with the columns above; list columns as 1-D numpy arrays) -> an Arrow table
    carrying ``meta`` (JSON) in its schema metadata."""
    pa, _ = arrow()
    schema = _schema(sub_tokens).with_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    columns = {}
    for field in schema:
        values = [row[field.name] for row in rows]
        if pa.types.is_list(field.type):
            columns[field.name] = _list_array(values, field.type)
        else:
            columns[field.name] = pa.array(values, type=field.type)
    return pa.table(columns, schema=schema)


def _list_array(values: list, list_type):
    """1-D numpy arrays -> an Arrow list array, without a Python loop over the elements."""
    import numpy as np

    pa, _ = arrow()
    item = np.int32 if list_type.value_type == pa.int32() else np.int64
    lengths = np.array([len(v) for v in values], dtype=np.int64)
    if lengths.sum() >= 2**31:
        raise LfqError("a shard would hold over 2**31 tokens: use a smaller --shard-size or --clip-frames")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate([np.asarray(v, dtype=item) for v in values]) if values else np.zeros(0, item)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=list_type.value_type))


def write_shard(path: Path, table) -> None:
    """Write a shard under a temporary name and rename it: a crash never leaves a half-written shard.
    Zstandard-compressed with page checksums (checked when a rerun validates the shard)."""
    _, pq = arrow()
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)


def read_shard_meta(path: Path, expected_fingerprint: str) -> dict | None:
    """The shard's metadata if ``path`` is a complete, readable shard made with ``expected_fingerprint``;
    ``None`` if it is missing, damaged, truncated or from other settings (it is then made again)."""
    _, pq = arrow()
    if not path.is_file():
        return None
    try:
        handle = pq.ParquetFile(path, page_checksum_verification=True)
        meta = json.loads((handle.schema_arrow.metadata or {}).get(META_KEY, b"{}"))
        if meta.get("format") != FORMAT or meta.get("fingerprint") != expected_fingerprint:
            return None
        table = handle.read()  # every page: checksums and decompression verified
    except Exception:  # noqa: BLE001 - any failure to read means: not a valid shard
        return None
    return meta if table.num_rows == meta.get("rows") else None


def existing_shards(out: Path) -> dict[int, Path]:
    """Shard files in ``out`` by index."""
    if not out.is_dir():
        return {}
    found = {}
    for path in out.iterdir():
        match = SHARD_PATTERN.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def write_manifest(out: Path, manifest: dict) -> None:
    with atomic_output(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
