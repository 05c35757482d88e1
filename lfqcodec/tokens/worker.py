"""Workers of ``lfqcodec tokenize``: the model loaded once, then clip after clip.

:class:`ClipTokenizer` runs in the calling process (one worker), in each local worker process
(:func:`run_local`) or in each Ray actor (:mod:`lfqcodec.tokens.ray_jobs`). Its tokens are those of
``lfqcodec encode`` + ``lfqcodec tokens`` with the same settings: the same
:func:`lfqcodec.codec.chunks.encode_chunks`, and :func:`lfqcodec.read_tokens`'s bit order.
"""

from __future__ import annotations

import itertools
import multiprocessing
import signal
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
import torch

from . import dataset as ds
from ..codec.chunks import Codec, encode_chunks
from ..model.device import select_device
from ..model.checkpoint import load_model
from ..base.errors import LfqError, ModelError
from ..model.quantizer import bits_to_indices, factorize_indices
from ..codec.search import SearchConfig
from .settings import TokenSettings
from ..io.videoio import VideoSource


@dataclass(frozen=True)
class ClipResult:
    job: ds.ClipJob
    rows: list[dict]  # one per window, columns of lfqcodec.tokens.dataset
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
                indices, chunk_starts, chunk_frames = self.tokens(window, info.width, info.height)
                if not window.count:
                    break
                rows.append({
                    "source": job.source, "window": len(rows), "start_frame": start, "frame_count": window.count,
                    "width": info.width, "height": info.height, "fps": float(info.fps),
                    "fps_num": info.fps.numerator, "fps_den": info.fps.denominator,
                    "grid_t": indices.shape[0], "grid_h": indices.shape[1], "grid_w": indices.shape[2],
                    "chunk_starts": np.asarray(chunk_starts, dtype=np.int32),
                    "chunk_frames": np.asarray(chunk_frames, dtype=np.int32), "tokens": indices.reshape(-1),
                    **self._sub_tokens(indices), "bits": self.keep, "model": self.model.name,
                    "model_id": self.model.model_id.hex(), "quality": self.settings.quality,
                })  # fmt: skip
                start += window.count
                if not size:
                    break
        if not rows:
            raise LfqError(f"no frames could be read from {job.source}")
        return rows

    def tokens(self, frames: Iterable[np.ndarray], width: int, height: int) -> tuple[np.ndarray, list[int], list[int]]:
        """Token indices (int64 ``T' x H' x W'``, chunks concatenated in time), each chunk's first
        latent frame and its frame count: what :func:`lfqcodec.read_tokens` returns for the same encoding."""
        s, parts, starts, counts, total = self.codec.cfg.spatial_factor, [], [], [], 0
        chunks = encode_chunks(self.codec, frames, width, height, self.settings.gop, self.keep,
                               self.settings.scenecut, self.search)  # fmt: skip
        for chunk in chunks:
            bits = torch.from_numpy(np.ascontiguousarray(chunk.bits[: self.keep]))
            parts.append(bits_to_indices(bits, dim=0))
            starts.append(total)
            counts.append(chunk.frames)
            total += bits.shape[1]
        if not parts:
            return np.zeros((0, -(-height // s), -(-width // s)), dtype=np.int64), [], []
        return torch.cat(parts).numpy(), starts, counts

    def _sub_tokens(self, indices: np.ndarray) -> dict:
        sub_bits = self.settings.sub_bits
        if not sub_bits:
            return {}
        sub = factorize_indices(torch.from_numpy(indices), self.keep, sub_bits).numpy()
        return {"sub_tokens": sub.reshape(-1), "sub_bits": sub_bits}


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
    workers = min(workers, len(jobs))
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
            free = 2 * workers - len(pending)  # a few queued per worker, so none waits for the next clip
            pending.update(pool.submit(_run_in_worker, job) for job in itertools.islice(queue, free))
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
