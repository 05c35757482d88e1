"""Tokenize a whole dataset of videos and images for language-model training.

>>> import lfqcodec
>>> report = lfqcodec.tokenize_dataset(["clips/", "more/*.mp4"], "tokens/", clip_frames=33, workers=2, threads=1)
>>> report.manifest["counts"]

Clips are split into shards (:mod:`lfqcodec.dataset`); workers tokenize clips, and the calling
process writes each shard (temporary name, then rename) once all its clips are back, so a rerun
skips the shards that are complete and valid and a crash loses at most the shards in progress.
Workers are local processes (each with its own model and thread count) or Ray actors
(:mod:`lfqcodec.tokenize_ray`, when ``ray`` is given). A clip that cannot be read is logged,
counted in the manifest and left out; it never stops the run.

The tokens are those of ``lfqcodec encode`` followed by ``lfqcodec tokens`` with the same settings
(the same :func:`lfqcodec.api.encode_chunks`, without the file in between).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import __version__
from . import dataset as ds
from .api import DEFAULT_GOP, DEFAULT_WINDOW, Codec, encode_chunks, select_device
from .checkpoint import load_model
from .errors import LfqError, ModelError
from .quantizer import bits_to_indices, factorize_indices
from .scenecut import DEFAULT_THRESHOLD as DEFAULT_SCENECUT
from .search import SearchConfig
from .tokenize_settings import TokenSettings, model_record
from .videoio import VideoSource

DEFAULT_SHARD_SIZE = 64  # clips per shard: the unit of resuming
MANIFEST_EVERY_S = 30.0  # the manifest is rewritten at most this often during a run (and at the end)
log = logging.getLogger(__name__)

__all__ = ["DEFAULT_SHARD_SIZE", "ClipResult", "ClipTokenizer", "TokenSettings", "TokenizeReport", "tokenize_dataset"]


@dataclass(frozen=True)
class ClipResult:
    job: ds.ClipJob
    rows: list[dict]  # one per window, columns of lfqcodec.dataset
    error: str | None = None  # why the clip could not be tokenized (then no rows)


class _Counted:
    """Passes frames through and counts them."""

    def __init__(self, frames: Iterable[np.ndarray]):
        self.frames, self.count = iter(frames), 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame in self.frames:
            self.count += 1
            yield frame


class ClipTokenizer:
    """One worker: the model loaded once, then clip after clip (in the calling process, in each local
    worker process, or in each Ray actor). ``expected_sha256`` guards against a worker that resolves
    the model name to other weights than the caller did."""

    def __init__(self, settings: TokenSettings, expected_sha256: str, device: str = "auto", threads: int | None = None):
        where = select_device(device)
        if threads:
            torch.set_num_threads(threads)
        loaded = load_model(settings.model)
        if loaded.sha256 != expected_sha256:
            raise ModelError(f"model {settings.model or 'lfq-base'!r} is {loaded.sha256[:16]} on this worker, "
                             f"{expected_sha256[:16]} where the run started")  # fmt: skip
        self.settings = settings
        self.model = loaded
        self.codec = Codec(loaded, where, settings.window)
        self.keep = loaded.config.quality_bits[settings.quality]
        self.search = SearchConfig(steps=settings.search_steps)

    def run(self, job: ds.ClipJob) -> ClipResult:
        """Tokenize one clip; a clip that cannot be read gives a result with ``error`` set."""
        try:
            return ClipResult(job, self.clip_rows(job))
        except LfqError as exc:
            return ClipResult(job, [], str(exc))
        except (MemoryError, RuntimeError, ValueError, OSError) as exc:
            return ClipResult(job, [], f"{type(exc).__name__}: {exc}")

    def clip_rows(self, job: ds.ClipJob) -> list[dict]:
        """The rows of one clip: the whole clip, or one per window of ``clip_frames`` frames."""
        size = self.settings.clip_frames
        rows: list[dict] = []
        with VideoSource(job.source) as source:
            info, frames, start = source.info, source.frames(), 0
            while True:
                window = _Counted(itertools.islice(frames, size) if size else frames)
                indices, chunk_starts = self.tokens(window, info.width, info.height)
                if not window.count:
                    break
                rows.append({
                    "source": job.source, "window": len(rows), "start_frame": start, "frame_count": window.count,
                    "width": info.width, "height": info.height, "fps": float(info.fps),
                    "grid_t": indices.shape[0], "grid_h": indices.shape[1], "grid_w": indices.shape[2],
                    "chunk_starts": np.asarray(chunk_starts, dtype=np.int32), "tokens": indices.reshape(-1),
                    **self._sub_tokens(indices), "bits": self.keep, "model": self.model.name,
                    "model_id": self.model.model_id.hex(), "quality": self.settings.quality,
                })  # fmt: skip
                start += window.count
                if not size:
                    break
        if not rows:
            raise LfqError(f"no frames could be read from {job.source}")
        return rows

    def tokens(self, frames: Iterable[np.ndarray], width: int, height: int) -> tuple[np.ndarray, list[int]]:
        """Token indices (int64 ``T' x H' x W'``, chunks concatenated in time) and each chunk's first
        latent frame: what :func:`lfqcodec.read_tokens` returns for the same encoding."""
        s, parts, starts, total = self.codec.cfg.spatial_factor, [], [], 0
        chunks = encode_chunks(self.codec, frames, width, height, self.settings.gop, self.keep,
                               self.settings.scenecut, self.search)  # fmt: skip
        for chunk in chunks:
            bits = torch.from_numpy(np.ascontiguousarray(chunk.bits[: self.keep]))
            parts.append(bits_to_indices(bits, dim=0))
            starts.append(total)
            total += bits.shape[1]
        if not parts:
            return np.zeros((0, -(-height // s), -(-width // s)), dtype=np.int64), []
        return torch.cat(parts).numpy(), starts

    def _sub_tokens(self, indices: np.ndarray) -> dict:
        sub_bits = self.settings.sub_bits
        if not sub_bits:
            return {}
        sub = factorize_indices(torch.from_numpy(indices), self.keep, sub_bits).numpy()
        return {"sub_tokens": sub.reshape(-1), "sub_bits": sub_bits}


# --- local worker processes ---------------------------------------------------------------------

_WORKER: ClipTokenizer | None = None


def _init_worker(settings: TokenSettings, sha256: str, device: str, threads: int, counter) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if device in ("auto", "cuda") and torch.cuda.is_available():
        with counter.get_lock():
            rank, counter.value = counter.value, counter.value + 1
        device = f"cuda:{rank % torch.cuda.device_count()}"  # spread the workers over the GPUs
    _WORKER = ClipTokenizer(settings, sha256, device, threads)


def _run_in_worker(job: ds.ClipJob) -> ClipResult:
    assert _WORKER is not None
    return _WORKER.run(job)


def run_local(jobs: Sequence[ds.ClipJob], settings: TokenSettings, sha256: str, workers: int, threads: int,
              device: str = "auto") -> Iterator[ClipResult]:  # fmt: skip
    """Results of ``jobs`` (in completion order) from ``workers`` processes of ``threads`` threads each;
    one worker runs in this process."""
    if not jobs:
        return
    if workers == 1:
        before = torch.get_num_threads()
        try:
            worker = ClipTokenizer(settings, sha256, device, threads)
            yield from map(worker.run, jobs)
        finally:
            torch.set_num_threads(before)
        return
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started its threads
    counter = context.Value("i", 0)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                               initargs=(settings, sha256, device, threads, counter))  # fmt: skip
    queue, pending = iter(jobs), set()
    try:
        while True:
            pending.update(pool.submit(_run_in_worker, job) for job in itertools.islice(queue, 2 * workers - len(pending)))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    except BrokenProcessPool:
        raise LfqError("a worker process died (out of memory? try fewer --workers or a smaller --clip-frames); "
                       "rerun the same command to resume") from None  # fmt: skip
    finally:
        pool.shutdown(wait=not pending, cancel_futures=True)


# --- the dataset ----------------------------------------------------------------------------------


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
    shards in the folder ``out`` (see :mod:`lfqcodec.dataset` for the columns) with ``manifest.json``.

    ``workers`` processes of ``threads`` threads each (default: :func:`default_workers`); with
    ``ray`` (``"auto"``: the running Ray cluster, ``"local"``: a new one on this machine, or an
    address), Ray actors do the work instead (``workers`` of them, default: one per GPU of the
    cluster, else one per ``threads`` CPUs). A rerun of the same call skips the complete shards;
    ``out`` holding a dataset made with other settings or inputs is refused unless ``overwrite``.
    Each clip that cannot be read is reported through ``warn`` (default: above the progress bar, or
    the ``lfqcodec.tokenize`` logger without one) and listed in the manifest."""
    started = time.time()
    settings = TokenSettings(str(model) if model is not None else None, quality, gop, scenecut, search_steps,
                             clip_frames, sub_bits, window)  # fmt: skip
    record = model_record(settings)
    sources = [str(p) for p in ds.find_inputs(inputs)]
    plan = ds.plan_shards(sources, shard_size)
    out = _prepare_out(Path(out), record, sources, shard_size, len(plan), overwrite)
    shard_meta, todo = {}, []
    for index, jobs in enumerate(plan):
        fp = ds.fingerprint(record["settings"], [job.source for job in jobs])
        meta = ds.read_shard_meta(ds.shard_path(out, index), fp)
        if meta is not None:
            shard_meta[index] = meta
        else:
            if ds.shard_path(out, index).exists():
                log.warning("%s is damaged, incomplete or from other settings: making it again",
                            ds.shard_path(out, index))  # fmt: skip
            todo.append((index, jobs, fp))
    manifest = _manifest(record, sources, plan, shard_size, shard_meta, command, started)
    ds.write_manifest(out, manifest)
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
                    ds.write_manifest(out, _manifest(record, sources, plan, shard_size, shard_meta, command, started))
                    saved_at = time.time()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(failed=len(failed), refresh=False)
    manifest = _manifest(record, sources, plan, shard_size, shard_meta, command, started)
    ds.write_manifest(out, manifest)
    return TokenizeReport(out, manifest, len(jobs), time.time() - started, failed)


def _results(jobs, settings, sha256, workers, threads, device, ray) -> Iterator[ClipResult]:
    if threads is not None and threads < 1 or workers is not None and workers < 1:
        raise LfqError("--workers and --threads must be >= 1")
    if ray is not None:
        from .tokenize_ray import run_ray

        return run_ray(jobs, settings, sha256, ray, workers, threads or 1, device)
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

