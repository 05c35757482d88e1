"""Scene-cut detection: where the encoder ends a chunk early.

A causal tokenizer predicts each group of frames from the ones before it; across a cut that past
belongs to another scene and the first frames of the new one come out badly (measured on the shared
``bikes`` clip: 31 dB on a first frame coded alone, 14-18 dB for the frames after a cut coded as a
continuation; per-frame PSNR in ``benchmarks/results/scenecut/``). Starting a new chunk at the cut codes its first frame as an image, as encoders put an
I-frame there.

The test is the one of simple encoders: the mean absolute change of a subsampled luma between two
consecutive frames, against an absolute threshold (on 0..255) and against the recent changes (so a
fast pan, which changes every frame a lot, is not a cut).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import numpy as np

from ..base.metrics import BT601_LUMA

DEFAULT_THRESHOLD = 30.0  # mean absolute luma change (0..255) that can mark a cut; 0 turns detection off
RECENT_RATIO = 3.0  # ... and it must exceed this multiple of the recent mean change
RECENT_FRAMES = 8


def _small_luma(frame: np.ndarray) -> np.ndarray:
    step = max(1, min(frame.shape[:2]) // 64)  # about 64 samples along the short side
    rgb = frame[::step, ::step].astype(np.float32)
    return rgb @ np.array(BT601_LUMA, dtype=np.float32)


class SceneCutDetector:
    """Feed every frame in order to :meth:`is_cut`; it says whether a frame starts a new scene."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD):
        self.threshold = threshold
        self.previous: np.ndarray | None = None
        self.recent: deque[float] = deque(maxlen=RECENT_FRAMES)

    def is_cut(self, frame: np.ndarray) -> bool:
        if self.threshold <= 0:
            return False
        luma = _small_luma(frame)
        previous, self.previous = self.previous, luma
        if previous is None:
            return False
        change = float(np.abs(luma - previous).mean())
        usual = float(np.mean(self.recent)) if self.recent else 0.0
        cut = change >= self.threshold and change >= RECENT_RATIO * usual
        self.recent.append(change)
        if cut:
            self.recent.clear()
        return cut


class ChunkSplitter:
    """Splits a frame stream into chunk streams: :meth:`chunk` yields frames until a scene cut (the
    cut frame is kept for the next chunk) or until the consumer stops asking (the chunk is full)."""

    def __init__(self, frames: Iterator[np.ndarray], threshold: float = DEFAULT_THRESHOLD):
        self.frames = iter(frames)
        self.detector = SceneCutDetector(threshold)
        self.pending: np.ndarray | None = None
        self.cuts: list[int] = []  # frame numbers where a chunk was started at a cut
        self.seen = 0
        self.starts_scene = True  # the chunk being read starts the video or a new scene

    def chunk(self) -> Iterator[np.ndarray]:
        if self.pending is not None:
            frame, self.pending = self.pending, None
            self.starts_scene = True
        else:
            frame = next(self.frames, None)
            if frame is None:
                return
            # a chunk boundary anyway: the detector only says whether the chunk also starts a scene
            self.starts_scene = self.detector.is_cut(frame) or self.seen == 0
            self.seen += 1
        yield frame
        for frame in self.frames:
            self.seen += 1
            if self.detector.is_cut(frame):
                self.pending = frame
                self.cuts.append(self.seen - 1)
                return
            yield frame
