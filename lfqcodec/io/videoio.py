"""Video in and out through PyAV (FFmpeg).

Reading yields RGB ``H x W x 3`` uint8 frames of the first video stream (audio and other streams
are ignored). Writing picks the codec from the output's extension:

========  =====================================================================
``.mkv``  FFV1, lossless, RGB (``bgr0``)
``.mp4``  H.264 (libx264), CRF 10, preset ``medium``, yuv420p (yuv444p for odd sizes)
``.mov``  same as ``.mp4``
``.y4m``  raw yuv444p in YUV4MPEG2
``.png``  one PNG image (only for one-frame videos)
========  =====================================================================
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..base.errors import LfqError

OUTPUT_FORMATS = {".mkv", ".mp4", ".mov", ".y4m", ".png"}
DEFAULT_FPS = Fraction(25)  # used when a source (e.g. a still image) declares no frame rate


def read_video_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Yield the first video stream's frames as ``H x W x 3`` uint8 RGB arrays."""
    with VideoSource(path) as source:
        yield from source.frames()


def mux_frames(container, stream, frames) -> None:
    """Encode RGB frames (``H x W x 3`` uint8 each, pts 0, 1, ...) into ``stream`` of the open PyAV
    ``container``, then flush the encoder."""
    for i, frame in enumerate(frames):
        video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = i
        for packet in stream.encode(video_frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def _ffmpeg_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0].strip() or type(exc).__name__


# FFmpeg's "unspecified" value of each colour tag: a tag with it says nothing and is not stored.
UNSPECIFIED_TAGS = {"color_range": 0, "colorspace": 2, "color_primaries": 2, "color_trc": 2}


def _colour_tags(codec_context) -> dict[str, str]:
    """The source's colour tags that say something (FFmpeg's enum values, as strings)."""
    tags = {}
    for name, unspecified in UNSPECIFIED_TAGS.items():
        value = getattr(codec_context, name, None)
        if value is not None and int(value) != unspecified:
            tags["source_" + name] = str(int(value))
    return tags


def _is_lfq(path: Path) -> bool:
    """Whether ``path`` starts with the ``.lfq`` magic bytes (an unreadable file is left to FFmpeg to report)."""
    from ..format.header import MAGIC

    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


@dataclass
class SourceInfo:
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frame_count_hint: int  # from the container; 0 when unknown (the true count is what is read)
    metadata: dict[str, str] = field(default_factory=dict)  # pixel format, colour tags, notes


class VideoSource:
    """The first video stream of anything FFmpeg opens (videos, ``.y4m``, image files)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            raise LfqError(f"{self.path} is a directory, not a video")
        if not self.path.exists():
            raise LfqError(f"no such file: {self.path}")
        if _is_lfq(self.path):
            raise LfqError(f"{self.path} is an .lfq file, already encoded: use lfqcodec decode to turn it back into video")
        try:
            self.container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise LfqError(f"cannot open {self.path}: {_ffmpeg_reason(exc)} (not a video PyAV can read?)") from None
        if not self.container.streams.video:
            self.container.close()
            raise LfqError(f"{self.path} has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        cc = self.stream.codec_context
        fps = self.stream.average_rate or self.stream.guessed_rate or DEFAULT_FPS
        self.info = SourceInfo(
            width=cc.width,
            height=cc.height,
            fps=Fraction(fps),
            time_base=Fraction(self.stream.time_base or Fraction(1, 90000)),
            frame_count_hint=int(self.stream.frames or 0),
            metadata={"source_pix_fmt": str(cc.pix_fmt), "source_codec": str(cc.name), **_colour_tags(cc)},
        )
        if self.info.width <= 0 or self.info.height <= 0:
            self.close()
            raise LfqError(f"{self.path}: video stream has no frame size")
        # Peek at the first frame: its display rotation (phone videos) goes into the header.
        # Frames are coded as stored; players apply the recorded rotation, lfqcodec does not.
        self._decoder = self.container.decode(self.stream)
        self._first = self._next_frame()
        rotation = int(getattr(self._first, "rotation", 0) or 0) if self._first is not None else 0
        if rotation:
            self.info.metadata["source_rotation"] = str(rotation)

    def _next_frame(self) -> av.VideoFrame | None:
        try:
            return next(self._decoder, None)
        except (av.error.FFmpegError, OSError) as exc:
            self.close()
            raise LfqError(f"cannot decode {self.path}: {_ffmpeg_reason(exc)}") from None

    def frames(self) -> Iterator[np.ndarray]:
        """RGB frames; raises :class:`LfqError` if the stream cannot be decoded."""
        frame = self._first
        while frame is not None:
            yield frame.to_ndarray(format="rgb24")
            frame = self._next_frame()

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise LfqError(f"unsupported output format {suffix or '(none)'!r}: use one of {', '.join(sorted(OUTPUT_FORMATS))}")
    return suffix


class VideoWriter:
    """Write RGB frames to a file whose format follows its extension (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: Fraction, suffix: str | None = None):
        self.path = Path(path)
        self.suffix = suffix or check_output_format(path)
        self.count = 0
        options: dict[str, str] = {}
        if self.suffix in (".mp4", ".mov"):
            codec, pix_fmt = "libx264", "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            options = {"crf": "10", "preset": "medium"}
            fmt = "mp4" if self.suffix == ".mp4" else "mov"
        elif self.suffix == ".mkv":
            codec, pix_fmt, fmt = "ffv1", "bgr0", "matroska"
        elif self.suffix == ".y4m":
            codec, pix_fmt, fmt = "rawvideo", "yuv444p", "yuv4mpegpipe"
        else:
            codec, pix_fmt, fmt = "png", "rgb24", "image2"
        self.container = av.open(str(self.path), mode="w", format=fmt)
        self.stream = self.container.add_stream(codec, rate=fps, options=options)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pix_fmt
        if self.suffix != ".png":
            self.stream.time_base = 1 / Fraction(fps)

    def write(self, frame_rgb: np.ndarray) -> None:
        if self.suffix == ".png" and self.count:
            raise LfqError("a .png output holds one frame; use a video extension for more")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
        frame.pts = self.count
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001, S110 - best-effort cleanup; the caller is already raising
            pass
