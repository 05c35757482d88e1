"""The training data cache: several processes (DDP ranks) preparing it at once."""

from __future__ import annotations

import multiprocessing
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import moving_pattern, write_clip

from lfqcodec.base.atomic import TEMP_MARKER
from lfqcodec.training.data import prepare_cache
from lfqcodec.base.errors import LfqError
from lfqcodec.io.videoio import VideoWriter, read_video_frames


def _prepare(sources: list[Path], cache: Path, start, decoded) -> None:
    """One 'rank': wait for the others, then prepare the cache, counting the files it decodes."""
    import lfqcodec.io.videoio as videoio

    original = videoio.read_video_frames

    def counting(path):
        with decoded.get_lock():
            decoded.value += 1
        return original(path)

    videoio.read_video_frames = counting
    start.wait()
    prepare_cache(sources, cache)


def _sources(folder: Path) -> list[Path]:
    folder.mkdir()
    clips = [write_clip(folder / f"clip{i}.mkv", moving_pattern(17, 48, 64, seed=i)) for i in range(3)]
    photo = folder / "photo.png"
    writer = VideoWriter(photo, 64, 48, Fraction(1))
    writer.write(moving_pattern(1, 48, 64, seed=9)[0])
    writer.close()
    return [*clips, photo]


def test_ranks_preparing_the_same_cache_at_once_decode_once_and_leave_it_whole(tmp_path):
    sources = _sources(tmp_path / "data")
    cache = tmp_path / "run" / "cache"
    context = multiprocessing.get_context("spawn")
    ranks = 2
    start, decoded = context.Barrier(ranks), context.Value("i", 0)
    args = ([tmp_path / "data"], cache, start, decoded)
    workers = [context.Process(target=_prepare, args=args) for _ in range(ranks)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    assert [w.exitcode for w in workers] == [0] * ranks
    assert decoded.value == len(sources)  # one rank decoded everything, the others waited and found it
    for path in sources:
        kind = "image" if path.suffix == ".png" else "video"
        cached = np.load(cache / f"{kind}-{path.stem}.npy")
        assert np.array_equal(cached, np.stack(list(read_video_frames(path))))
    assert [p.name for p in cache.iterdir() if TEMP_MARKER in p.name] == []
    assert sorted(prepare_cache([tmp_path / "data"], cache)) == sorted(cache.glob("*.npy"))


def test_a_source_without_frames_is_a_one_line_error(tmp_path, monkeypatch):
    import lfqcodec.io.videoio as videoio

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "empty.mkv").write_bytes(b"")
    monkeypatch.setattr(videoio, "read_video_frames", lambda path: iter(()))
    with pytest.raises(LfqError, match="no video frames"):
        prepare_cache([tmp_path / "data"], tmp_path / "cache")
    assert list((tmp_path / "cache").glob("*.npy")) == []
