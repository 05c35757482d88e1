"""Tokenizing on a Ray cluster: one actor per worker, each with the model loaded once.

Needs the ``scale`` extra (``pip install 'lfqcodec[scale]'``); ``ray`` is imported only here, and
this module only when ``tokenize_dataset(..., ray=...)`` / ``lfqcodec tokenize --ray`` asks for it.

Every worker machine needs lfqcodec (same version and model) and read access to the inputs under
the same paths (a shared or mounted file system); the shards are written by the calling process,
so the output folder only needs to be on the machine that starts the run. On a cluster with GPUs
each actor takes one GPU and runs the network there (the tokens do not depend on the device, up to
latents within rounding of zero; see docs/FORMAT.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from .dataset import ClipJob
from ..base.errors import LfqError
from .worker import ClipResult, ClipTokenizer
from .settings import TokenSettings


def import_ray():
    try:
        import ray
    except ImportError:
        raise LfqError("--ray needs the scale extra: pip install 'lfqcodec[scale]'") from None
    return ray


def connect(ray, address: str) -> bool:
    """Use the Ray instance this process already has, else connect: ``auto`` = the running cluster
    (``ray start --head`` or ``RAY_ADDRESS``), ``local`` = a new instance on this machine, else an
    address (``HOST:6379`` or ``ray://HOST:10001``). Returns whether this call started the connection."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False)  # fmt: skip
    except ConnectionError as exc:
        raise LfqError(f"cannot reach a Ray cluster at {address!r}: {exc} (start one with `ray start --head`, "
                       "or use --ray local)") from None  # fmt: skip
    return True


@contextlib.contextmanager
def ray_connection(address: str) -> Iterator[None]:
    """Connected to Ray (:func:`connect`) for the block; disconnected after it if the block's
    connection was this one's."""
    ray = import_ray()
    started = connect(ray, address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


class _Actor:
    """A Ray actor around :class:`ClipTokenizer` (the model is loaded once, in ``__init__``)."""

    def __init__(self, settings: TokenSettings, sha256: str, device: str, threads: int):
        self.worker = ClipTokenizer(settings, sha256, device, threads)

    def run(self, job: ClipJob) -> ClipResult:
        return self.worker.run(job)


def run_ray(jobs: Sequence[ClipJob], settings: TokenSettings, sha256: str, workers: int | None, threads: int,
            device: str = "auto") -> Iterator[ClipResult]:  # fmt: skip
    """Results of ``jobs`` (in completion order) from ``workers`` Ray actors of ``threads`` CPUs each
    (and one GPU each when the cluster has GPUs and ``device`` is not ``cpu``), on the Ray instance
    this process is connected to (:func:`ray_connection`). Default ``workers``: one per GPU, else one
    per ``threads`` CPUs of the cluster."""
    if not jobs:
        return
    ray = import_ray()
    from ray.util import ActorPool

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
    if device == "cuda" and not gpus:
        raise LfqError("--device cuda was asked for, but the Ray cluster has no GPU")
    count = min(len(jobs), workers or max(1, gpus or int(resources.get("CPU", 1)) // threads))
    actor = ray.remote(num_cpus=threads, num_gpus=1 if gpus else 0)(_Actor)
    actors = [actor.remote(settings, sha256, "cuda" if gpus else "cpu", threads) for _ in range(count)]
    try:
        yield from ActorPool(actors).map_unordered(lambda a, job: a.run.remote(job), list(jobs))
    except ray.exceptions.RayActorError as exc:
        raise LfqError(f"a Ray worker died ({_first_line(exc)}); rerun the same command to resume") from None
    except ray.exceptions.RayTaskError as exc:
        raise LfqError(f"a Ray worker failed: {_first_line(exc)}") from None
    finally:
        for handle in actors:
            ray.kill(handle)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
