"""Tokenize a whole dataset of videos and images for language-model training.

>>> import lfqcodec
>>> report = lfqcodec.tokenize_dataset(["clips/", "more/*.mp4"], "tokens/", clip_frames=33, workers=2, threads=1)
>>> report.manifest["counts"]

Clips are split into shards (:mod:`lfqcodec.tokens.dataset`); workers tokenize clips, and the calling
process writes each shard (temporary name, then rename) once all its clips are back, so a rerun
skips the shards that are complete and valid and a crash loses at most the shards in progress.
Workers are local processes (each with its own model and thread count) or Ray actors
(:mod:`lfqcodec.tokens.ray_jobs`, when ``ray`` is given), both running
:class:`~lfqcodec.tokens.worker.ClipTokenizer`. A clip that cannot be read is logged,
counted in the manifest and left out; it never stops the run.

The tokens are those of ``lfqcodec encode`` followed by ``lfqcodec tokens`` with the same settings
(the same :func:`lfqcodec.codec.chunks.encode_chunks`, without the file in between).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import __version__
from . import dataset as ds
from ..codec.chunks import DEFAULT_GOP, DEFAULT_WINDOW
from ..base.errors import LfqError
from ..codec.scenecut import DEFAULT_THRESHOLD as DEFAULT_SCENECUT
from .settings import TokenSettings, model_record
from .worker import ClipResult, ClipTokenizer, run_local

DEFAULT_SHARD_SIZE = 64  # clips per shard: the unit of resuming
MANIFEST_EVERY_S = 30.0  # the manifest is rewritten at most this often during a run (and at the end)
log = logging.getLogger(__name__)

__all__ = ["DEFAULT_SHARD_SIZE", "ClipResult", "ClipTokenizer", "TokenSettings", "TokenizeReport", "tokenize_dataset"]


@dataclass
class TokenizeReport:
    out: Path
    manifest: dict
    clips_done: int  # clips tokenized by this run (the skipped shards' clips not included)
    seconds: float
    failed: list[dict] = field(default_factory=list)  # {"source", "error"} of every unreadable clip

    @property
    def clips_per_second(self) -> float:
        return self.clips_done / self.seconds if self.seconds else 0.0


def default_workers(device: str = "auto") -> tuple[int, int]:
    """``(workers, threads)`` for this machine: one worker per GPU, else one single-threaded worker per
    core (at most 8: each holds a model and a chunk of video in memory)."""
    cores = os.cpu_count() or 1
    if device != "cpu" and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        return gpus, max(1, cores // gpus)
    workers = min(cores, 8)
    return workers, max(1, cores // workers)


def tokenize_dataset(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    model: str | os.PathLike | None = None,
    quality: str = "medium",
    clip_frames: int | None = None,
    sub_bits: int | None = None,
    gop: int = DEFAULT_GOP,
    scenecut: float = DEFAULT_SCENECUT,
    search_steps: int = 0,
    window: int = DEFAULT_WINDOW,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    ray: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    command: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> TokenizeReport:
    """Tokenize every video and image under ``inputs`` (files, folders, glob patterns) into Parquet
    shards in the folder ``out`` (see :mod:`lfqcodec.tokens.dataset` for the columns) with ``manifest.json``.

    ``workers`` processes of ``threads`` threads each (default: :func:`default_workers`); with
    ``ray`` (``"auto"``: the running Ray cluster, ``"local"``: a new one on this machine, or an
    address), Ray actors do the work instead (``workers`` of them, default: one per GPU of the
    cluster, else one per ``threads`` CPUs). A rerun of the same call skips the complete shards;
    ``out`` holding a dataset made with other settings or inputs is refused unless ``overwrite``.
    Each clip that cannot be read is reported through ``warn`` (default: above the progress bar, or
    the ``lfqcodec.tokens.tokenize`` logger without one) and listed in the manifest."""
    started = time.time()
    ds.arrow()  # a missing optional dependency is reported before any work
    if threads is not None and threads < 1 or workers is not None and workers < 1:
        raise LfqError("--workers and --threads must be >= 1")
    settings = TokenSettings(str(model) if model is not None else None, quality, gop, scenecut, search_steps,
                             clip_frames, sub_bits, window)  # fmt: skip
    record = model_record(settings)
    sources = [str(p) for p in ds.find_inputs(inputs)]
    plan = ds.plan_shards(sources, shard_size)
    with contextlib.ExitStack() as engine:
        if ray is not None:  # connect first: an unreachable cluster is reported before anything is written
            from .ray_jobs import ray_connection

            engine.enter_context(ray_connection(ray))
        out = _prepare_out(Path(out), record, sources, shard_size, len(plan), overwrite)
        shard_meta, todo = _check_shards(out, plan, record["settings"])
        ds.write_manifest(out, _manifest(record, sources, plan, shard_size, shard_meta, command, started))
        jobs = [job for _, shard_jobs, _ in todo for job in shard_jobs]
        results = _results(jobs, settings, record["settings"]["model_sha256"], workers, threads, device, ray)
        failed = [f for meta in shard_meta.values() for f in meta["failed"]]
        waiting = {index: (len(shard_jobs), fp, []) for index, shard_jobs, fp in todo}
        saved_at = time.time()
        with _progress_bar(len(jobs), progress) as bar:
            warn = warn or (_write_above_bar if bar is not None else log.warning)
            for result in results:
                if result.error:
                    failed.append({"source": result.job.source, "error": result.error})
                    warn(f"lfqcodec: warning: skipped {result.job.source}: {result.error}")
                count, fp, done = waiting[result.job.shard]
                done.append(result)
                if len(done) == count:
                    shard_meta[result.job.shard] = _write_shard(out, result.job.shard, fp, done, settings)
                    del waiting[result.job.shard]
                    if time.time() - saved_at > MANIFEST_EVERY_S:
                        manifest = _manifest(record, sources, plan, shard_size, shard_meta, command, started)
                        ds.write_manifest(out, manifest)
                        saved_at = time.time()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(failed=len(failed), refresh=False)
        manifest = _manifest(record, sources, plan, shard_size, shard_meta, command, started)
        ds.write_manifest(out, manifest)
        return TokenizeReport(out, manifest, len(jobs), time.time() - started, failed)


def _check_shards(out: Path, plan: list[list[ds.ClipJob]], settings: dict) -> tuple[dict, list]:
    """``({index: metadata} of the complete shards, [(index, jobs, fingerprint)] of those to make)``."""
    complete, todo = {}, []
    for index, jobs in enumerate(plan):
        fp = ds.fingerprint(settings, [job.source for job in jobs])
        meta = ds.read_shard_meta(ds.shard_path(out, index), fp)
        if meta is not None:
            complete[index] = meta
            continue
        if ds.shard_path(out, index).exists():
            log.warning("%s is damaged, incomplete or from other settings: making it again", ds.shard_path(out, index))
        todo.append((index, jobs, fp))
    return complete, todo


def _results(jobs, settings, sha256, workers, threads, device, ray) -> Iterator[ClipResult]:
    if ray is not None:
        from .ray_jobs import run_ray

        return run_ray(jobs, settings, sha256, workers, threads or 1, device)
    auto_workers, auto_threads = default_workers(device)
    workers = workers or auto_workers
    threads = threads or (auto_threads if workers == auto_workers else max(1, (os.cpu_count() or 1) // workers))
    return run_local(jobs, settings, sha256, workers, threads, device)


def _prepare_out(out: Path, record: dict, sources: list[str], shard_size: int, shards: int, overwrite: bool) -> Path:
    if out.exists() and not out.is_dir():
        raise LfqError(f"output {out} is a file, not a folder")
    previous = ds.read_manifest(out)
    wanted = {"settings": record["settings"], "shard_size": shard_size, "inputs_sha256": _inputs_hash(sources)}
    if previous is not None:
        before = {k: previous.get(k) for k in ("settings", "shard_size")} | {
            "inputs_sha256": previous.get("inputs", {}).get("sha256")}  # fmt: skip
        if before != wanted and not overwrite:
            changed = ", ".join(k for k in wanted if before.get(k) != wanted[k])
            raise LfqError(f"{out} holds tokens made with other {changed.replace('_', ' ')}: "
                           f"use another output folder, or -y/--overwrite to replace them")  # fmt: skip
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LfqError(f"cannot create {out}: {exc.strerror or exc}") from None
    for index, path in ds.existing_shards(out).items():
        if index >= shards:  # left over from a dataset with more shards (only reachable with overwrite)
            path.unlink()
    return out


def _inputs_hash(sources: list[str]) -> str:
    return ds.fingerprint({}, sources)


def _write_shard(out: Path, index: int, fp: str, results: list[ClipResult], settings: TokenSettings) -> dict:
    results = sorted(results, key=lambda r: r.job.index)
    rows = [row for r in results for row in r.rows]
    meta = {
        "format": ds.FORMAT, "fingerprint": fp, "index": index, "clips": len(results),
        "clips_tokenized": sum(1 for r in results if not r.error), "rows": len(rows),
        "frames": sum(row["frame_count"] for row in rows), "tokens": sum(len(row["tokens"]) for row in rows),
        "failed": [{"source": r.job.source, "error": r.error} for r in results if r.error],
    }  # fmt: skip
    ds.write_shard(ds.shard_path(out, index), ds.rows_to_table(rows, bool(settings.sub_bits), meta))
    return meta


def _manifest(record: dict, sources: list[str], plan: list, shard_size: int, shard_meta: dict, command: str | None,
              started: float) -> dict:  # fmt: skip
    done = [shard_meta[i] for i in sorted(shard_meta)]
    count = lambda key: sum(meta[key] for meta in done)  # noqa: E731
    return {
        "format": ds.FORMAT,
        "complete": len(done) == len(plan),
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "lfqcodec_version": __version__,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds_this_run": round(time.time() - started, 3),
        "model": record["model"],
        "settings": record["settings"],
        "shard_size": shard_size,
        "inputs": {"count": len(sources), "sha256": _inputs_hash(sources)},
        "counts": {"clips": len(sources), "shards": len(plan), "shards_complete": len(done),
                   "clips_done": count("clips"), "clips_tokenized": count("clips_tokenized"),
                   "clips_failed": sum(len(meta["failed"]) for meta in done), "rows": count("rows"),
                   "frames": count("frames"), "tokens": count("tokens")},  # fmt: skip
        "shards": [{"file": ds.SHARD_NAME.format(meta["index"]), **{k: meta[k] for k in
                    ("clips", "clips_tokenized", "rows", "frames", "tokens")}} for meta in done],  # fmt: skip
        "failed": [f for meta in done for f in meta["failed"]],
    }


def _write_above_bar(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _progress_bar(total: int, enabled: bool):
    if not enabled or not total:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, desc="tokenize", unit="clip", dynamic_ncols=True, file=sys.stderr)

