"""Rows of a token dataset (``lfqcodec tokenize``'s Parquet shards, docs/DATASET.md) as one
:class:`~lfqcodec.tokens.files.TokenInput` for ``lfqcodec detokenize``.

The metadata columns of a shard are read whole (a few values per row); the ``tokens`` of the
chosen rows are read one row at a time. Rows chosen together (``--row A-B``, ``--clip``) are decoded
one after the other, each row's chunks as recorded: they must share the frame size, rate, model
and bits.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import dataset as ds
from ..base.errors import LfqError
from .files import TokenInput

_META_COLUMNS = ("source", "window", "frame_count", "width", "height", "fps", "fps_num", "fps_den", "grid_t",
                 "grid_h", "grid_w", "chunk_starts", "chunk_frames", "bits", "model", "model_id", "quality")  # fmt: skip


def shard_file(path: Path, shard: int | None) -> Path:
    """The shard a command names: a ``.parquet`` file, or shard ``shard`` (default 0) of a dataset folder."""
    if not path.is_dir():
        if shard is not None:
            raise LfqError(f"--shard picks a shard of a dataset folder; {path} is a shard file already")
        if not path.is_file():
            raise LfqError(f"no such file: {path}")
        return path
    found = ds.existing_shards(path)
    index = 0 if shard is None else shard
    if index not in found:
        have = f"shards {min(found)}..{max(found)}" if found else "no shards"
        raise LfqError(f"{path} has {have}; shard {index} does not exist")
    return found[index]


def _pick(rows: str | None, clip: str | None, meta: list[dict], src: str) -> list[int]:
    if rows is not None and clip is not None:
        raise LfqError("--row and --clip both pick rows: give one")
    if clip is not None:
        picked = sorted((r["window"], i) for i, r in enumerate(meta) if r["source"] == clip)
        if not picked:
            raise LfqError(f"{src} has no rows of clip {clip!r}")
        return [i for _, i in picked]
    text = (rows or "0").strip()
    try:
        first, _, last = text.partition("-")
        lo, hi = int(first), int(last or first)
    except ValueError:
        raise LfqError(f"--row {text!r} is not a row number or a range like 3-7") from None
    if not 0 <= lo <= hi < len(meta):
        raise LfqError(f"{src} has {len(meta)} rows (0..{len(meta) - 1}); row {text} does not exist")
    return list(range(lo, hi + 1))


def read_rows(path: Path, shard: int | None, rows: str | None, clip: str | None) -> TokenInput:
    """Rows of a shard (``rows``: ``N`` or ``A-B``; ``clip``: every row of that source, by window)."""
    import pyarrow.parquet as pq

    file = shard_file(path, shard)
    src = str(file)
    try:
        handle = pq.ParquetFile(file)
        columns = [c for c in _META_COLUMNS if c in handle.schema_arrow.names]
        meta = handle.read(columns=columns).to_pylist()
    except Exception as exc:  # noqa: BLE001 - any unreadable shard is the same error to the user
        raise LfqError(f"cannot read {file} as a token shard: {exc}") from None
    needed = {"tokens", "grid_t", "grid_h", "grid_w", "width", "height", "bits", "model_id", "frame_count"}
    missing = needed - set(handle.schema_arrow.names)
    if missing:
        raise LfqError(f"{src} is not a token shard of lfqcodec tokenize (no {', '.join(sorted(missing))} column)")
    picked = _pick(rows, clip, meta, src)
    chosen = [meta[i] for i in picked]
    first = chosen[0]
    for key in ("width", "height", "bits", "model_id", "fps_num", "fps_den", "grid_h", "grid_w"):
        if any(r.get(key) != first.get(key) for r in chosen):
            raise LfqError(f"{src}: the rows picked differ in {key}; pick rows of one clip (--clip) or one row")
    for index, r in zip(picked, chosen):  # a shard never holds more (lfqcodec.tokens.dataset): refuse before any layout
        if not 0 < r["grid_t"] * r["grid_h"] * r["grid_w"] < 2**31:
            raise LfqError(f"{src} row {index}: grid {r['grid_t']}x{r['grid_h']}x{r['grid_w']} is empty or too large")
    version = 2 if "chunk_frames" in columns else 1
    if version == 1 and len(chosen) > 1:
        raise LfqError(f"{src} is token format 1 (no chunk frame counts): decode its rows one at a time (--row N)")
    fps = Fraction(first["fps_num"], first["fps_den"]) if version == 2 and first["fps_den"] else None
    chunk_frames = [c for r in chosen for c in r["chunk_frames"]] if version == 2 else None
    starts, total = [], 0
    for r in chosen:
        starts += [total + s for s in r["chunk_starts"]]
        total += r["grid_t"]
    where = f"{src} row {picked[0]}" + (f"-{picked[-1]}" if len(picked) > 1 else "")

    def frames() -> Iterator[np.ndarray]:
        wanted = iter(picked)
        target = next(wanted)
        batches = handle.iter_batches(batch_size=1, columns=["tokens"])
        for index, batch in enumerate(batches):
            if index != target:
                continue
            row = meta[index]
            shape = (row["grid_t"], row["grid_h"], row["grid_w"])
            tokens = batch.column(0)[0].values.to_numpy(zero_copy_only=False)
            if tokens.size != int(np.prod(shape)):
                raise LfqError(f"{src} row {index}: {tokens.size} tokens, but its grid {shape} needs {np.prod(shape)}")
            yield from tokens.reshape(shape)
            target = next(wanted, None)
            if target is None:
                return

    return TokenInput(
        where, version, (total, first["grid_h"], first["grid_w"]), frames, first["bits"], first["width"],
        first["height"], fps, sum(r["frame_count"] for r in chosen), None, chunk_frames,
        starts if version == 1 else None, bytes.fromhex(first["model_id"]), first.get("model") or "",
        first.get("quality") or "",
    )  # fmt: skip
