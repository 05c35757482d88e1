"""The I/O pipeline: same output as the serial path, errors surface, threads stop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import moving_pattern, write_clip

import lfqcodec
from lfqcodec.bench.suite import read_clip
from lfqcodec.io.pipeline import BackgroundWriter, prefetched


def test_prefetched_keeps_order_and_raises_where_the_source_failed():
    assert list(prefetched(range(100), depth=3)) == list(range(100))

    def failing():
        yield 1
        yield 2
        raise ValueError("broken frame")

    seen = []
    with pytest.raises(ValueError, match="broken frame"):
        for item in prefetched(failing()):
            seen.append(item)
    assert seen == [1, 2]


def test_prefetched_stops_its_thread_when_the_consumer_stops():
    produced = []

    def endless():
        for i in range(10**9):
            produced.append(i)
            yield i

    before = threading.active_count()
    items = prefetched(endless(), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert threading.active_count() == before
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count and count <= 3 + 2 + 1


class ListWriter:
    def __init__(self, fail_at: int | None = None):
        self.frames, self.closed, self.aborted, self.fail_at = [], False, False, fail_at

    def write(self, frame):
        if len(self.frames) == self.fail_at:
            raise OSError("disk full")
        time.sleep(0.001)
        self.frames.append(frame)

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True


def test_background_writer_writes_everything_in_order():
    sink = ListWriter()
    writer = BackgroundWriter(sink, depth=2)
    for i in range(20):
        writer.write(i)
    writer.close()
    assert sink.frames == list(range(20)) and sink.closed


def test_background_writer_raises_the_writers_error():
    sink = ListWriter(fail_at=3)
    writer = BackgroundWriter(sink, depth=2)
    with pytest.raises(OSError, match="disk full"):
        for i in range(50):
            writer.write(i)
        writer.close()
    writer.abort()
    assert sink.aborted and not sink.closed


def test_pipeline_gives_the_serial_output(tmp_path, tiny_model):
    src = write_clip(tmp_path / "in.mkv", moving_pattern(14, 24, 40))
    outputs = {}
    for pipeline in (False, True):
        lfq = tmp_path / f"p{pipeline}.lfq"
        lfqcodec.encode_file(src, lfq, model=tiny_model, device="cpu", gop=9, pipeline=pipeline)
        mkv = tmp_path / f"p{pipeline}.mkv"
        lfqcodec.decode_file(lfq, mkv, model=tiny_model, device="cpu", pipeline=pipeline)
        outputs[pipeline] = lfq.read_bytes(), read_clip(mkv, 100)[0]
    assert outputs[True][0] == outputs[False][0]
    assert np.array_equal(outputs[True][1], outputs[False][1]) and len(outputs[True][1]) == 14


def test_pipeline_encode_stops_reading_at_max_frames(tmp_path, tiny_model):
    src = write_clip(tmp_path / "in.mkv", moving_pattern(30, 16, 24))
    report = lfqcodec.encode_file(src, tmp_path / "a.lfq", model=tiny_model, device="cpu", max_frames=5)
    assert report.header.frame_count == 5
