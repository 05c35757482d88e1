"""The encodes and decodes of ``lfqcodec bench``, each in a fresh process of its own.

Each encode and each decode, lfqcodec's and the reference codecs', runs in a new process forked from
a small server process that has imported NumPy, PyAV, torch and lfqcodec and nothing else (the
``forkserver`` start method). So the process's peak resident memory (``ru_maxrss``) is what that one
encode or decode needed, plus the same imports a real ``lfqcodec`` or PyAV process carries, never
what an earlier run left allocated; and a crash of a codec library is an error, not an abort (libx265
keeps state between encoder instances and has been seen to corrupt its heap when several small-frame
encodes share one process).

The frames go in and out through raw files, read and written a frame at a time (``T x H x W x 3``
uint8), as a codec reads a video file, so the clip in memory is counted once, not in every process.
"""

from __future__ import annotations

import concurrent.futures
import io
import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..base.errors import LfqError

PRELOADED = ["numpy", "av", "torch", "lfqcodec.api", "lfqcodec.bench.runs"]


def in_own_process(what: str, function: Callable, *args):
    """``function(*args)`` in a fresh process; returns its result and the process's peak RSS in MiB."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(_measured, function, *args).result()
        except concurrent.futures.process.BrokenProcessPool:
            raise LfqError(f"{what} crashed") from None


def _measured(function: Callable, *args):
    result = function(*args)
    return result, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def read_raw(path: Path, shape: tuple[int, int, int]) -> Iterator[np.ndarray]:
    """The frames of a raw file of ``H x W x 3`` uint8 frames, one at a time."""
    size = int(np.prod(shape))
    with open(path, "rb") as handle:
        while data := handle.read(size):
            yield np.frombuffer(data, np.uint8).reshape(shape)


def write_raw(path: Path, frames) -> int:
    count = 0
    with open(path, "wb") as handle:
        for frame in frames:
            handle.write(np.ascontiguousarray(frame, np.uint8).tobytes())
            count += 1
    return count


def lfq_encode(raw: Path, shape, fps: Fraction, dst: Path, model: str | None, quality: str, preset, device: str,
               gop: int, search_steps: int) -> float:  # fmt: skip
    """Encode the raw clip ``raw`` into ``dst`` with ``preset`` (the :class:`~lfqcodec.presets.preset.Preset` the
    calling process resolved, under its name); returns the seconds taken (model loaded before)."""
    import torch

    from ..api import encode_frames
    from ..model.checkpoint import load_model
    from ..presets.preset import PRESETS

    PRESETS[preset.name] = preset
    torch.set_num_threads(os.cpu_count() or 1)
    loaded = load_model(model)
    started = time.perf_counter()
    encode_frames(read_raw(raw, shape), dst, width=shape[1], height=shape[0], fps=fps, model=loaded, quality=quality,
                  device=device, gop=gop, search_steps=search_steps, preset=preset.name, overwrite=True)  # fmt: skip
    return time.perf_counter() - started


def lfq_decode(src: Path, raw: Path, model: str | None, device: str) -> float:
    import torch

    from ..api import decode_frames
    from ..model.checkpoint import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    loaded = load_model(model)
    started = time.perf_counter()
    write_raw(raw, decode_frames(src, device=device, model=loaded))
    return time.perf_counter() - started


def reference_encode(raw: Path, shape, fps: Fraction, dst: Path, codec: str, options: dict[str, str]) -> float:
    """Encode the raw clip with FFmpeg's ``codec`` (``yuv420p``: odd sizes padded by repeating the edge) into
    the ``.mkv`` ``dst``; returns the seconds taken."""
    from ..io.videoio import mux_frames

    height, width = shape[0] + shape[0] % 2, shape[1] + shape[1] % 2
    pad = ((0, height - shape[0]), (0, width - shape[1]), (0, 0))
    av.logging.set_level(av.logging.ERROR)
    started = time.perf_counter()
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        mux_frames(container, stream, (np.pad(f, pad, mode="edge") if any(p[1] for p in pad) else f
                                       for f in read_raw(raw, shape)))  # fmt: skip
    seconds = time.perf_counter() - started
    Path(dst).write_bytes(buffer.getvalue())
    return seconds


def reference_decode(src: Path, raw: Path, shape) -> float:
    """Decode the ``.mkv`` ``src`` into raw frames cropped back to ``shape``; returns the seconds taken."""
    av.logging.set_level(av.logging.ERROR)
    data = Path(src).read_bytes()
    started = time.perf_counter()
    with av.open(io.BytesIO(data), "r") as container:
        frames = (f.to_ndarray(format="rgb24")[: shape[0], : shape[1]] for f in container.decode(video=0))
        write_raw(raw, frames)
    return time.perf_counter() - started
