"""Overlap the network with video I/O: reading (demuxing, decoding, colour conversion) and writing
(colour conversion, encoding, muxing) run in background threads while the network runs.

PyAV and PyTorch both release the GIL in their native code, so threads overlap (processes would
have to copy every frame). Order and content are those of the serial path: a thread only moves
where work happens. Queues are short (one network window of frames), so memory stays flat.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

import numpy as np

T = TypeVar("T")
DEFAULT_DEPTH = 8  # frames held between the threads: one window of the default --window 2
_DONE = object()
_POLL_S = 0.1  # how often a blocked thread checks whether the other side has stopped


def prefetched(items: Iterable[T], depth: int = DEFAULT_DEPTH) -> Iterator[T]:
    """Yield ``items`` in order while a background thread produces up to ``depth`` ahead.

    An exception in the producer is raised here, at the item where it happened. When the consumer
    stops early (closes the generator), the producer is stopped and joined before this returns,
    so the source can be closed safely afterwards."""
    buffer: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((item, None), timeout=_POLL_S)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            _put(buffer, (_DONE, None), stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            _put(buffer, (_DONE, exc), stop)

    thread = threading.Thread(target=produce, name="lfqcodec-read", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _put(buffer: queue.Queue, entry: tuple, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            buffer.put(entry, timeout=_POLL_S)
            return
        except queue.Full:
            continue


class FrameWriter(Protocol):
    def write(self, frame_rgb: np.ndarray) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class BackgroundWriter:
    """A :class:`~lfqcodec.io.videoio.VideoWriter` (or anything with ``write``/``close``/``abort``)
    fed from a background thread: ``write`` queues a frame and returns. An error in the thread is
    raised by the next ``write`` or by ``close``."""

    def __init__(self, writer: FrameWriter, depth: int = DEFAULT_DEPTH):
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lfqcodec-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                frame = self._queue.get()
                if frame is _DONE or self._stop.is_set():
                    return
                self.writer.write(frame)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            self._error = exc
            self._stop.set()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, frame_rgb: np.ndarray) -> None:
        self._check()
        while not self._stop.is_set():
            try:
                self._queue.put(frame_rgb, timeout=_POLL_S)
                return
            except queue.Full:
                continue
        self._check()

    def close(self) -> None:
        """Write what is queued, then close the writer."""
        _put(self._queue, _DONE, self._stop)
        self._thread.join()
        self._check()
        self.writer.close()

    def abort(self) -> None:
        """Drop what is queued and abort the writer."""
        self._stop.set()
        while True:  # unblock the thread if it waits for a frame
            try:
                self._queue.put_nowait(_DONE)
                break
            except queue.Full:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
        self._thread.join()
        self.writer.abort()
