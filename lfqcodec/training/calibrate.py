"""int8 calibration: the ranges :func:`lfqcodec.model.int8.quantize_tokenizer` uses, recorded while the float32
network codes a few training clips (``lfqcodec calibrate-int8``). It runs a :class:`~lfqcodec.codec.chunks.Codec`,
so it sits above the codec; the int8 layers themselves are in :mod:`lfqcodec.model.int8`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..codec.chunks import Codec
from ..model.device import select_device
from ..model.int8 import Range, RangeRecorder


def calibrate(model, clips: Iterable[Path], frames: int = 9, max_pixels: int = 1280 * 720, progress=None) -> tuple[dict[str, tuple[Range, Range]], list[str]]:
    """Ranges for :func:`quantize_tokenizer`: the float32 network encodes and decodes (all bits)
    the first ``frames`` frames of each clip while :class:`RangeRecorder` watches. Clips larger
    than ``max_pixels`` per frame are skipped. Returns the ranges and the clips used."""
    from ..io.videoio import VideoSource  # PyAV: only where a video file is read

    codec = Codec(model, select_device("cpu"), precision="fp32", memory_budget=0)
    recorder = RangeRecorder(codec.tokenizer)
    used = []
    try:
        for clip in clips:
            with VideoSource(clip) as source:
                width, height = source.info.width, source.info.height
                if width * height > max_pixels:
                    continue
                s = model.config.spatial_factor
                grid = (-(-height // s), -(-width // s))
                encoded = codec.encode_chunk((frame for _, frame in zip(range(frames), source.frames())), frames, grid)
                for _ in codec.decode_chunk(encoded.bits, encoded.frames, height, width):
                    pass
            used.append(Path(clip).name)
            if progress:
                progress(f"{Path(clip).name}: {encoded.frames} frames")
    finally:
        recorder.close()
    return recorder.ranges(), used
