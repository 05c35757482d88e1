"""Scene cuts: detection, chunks that end at a cut, and decoding / salvaging such files."""

import numpy as np
from conftest import moving_pattern, write_clip
from test_cli import read_frames, run

import lfqcodec
from lfqcodec.codec.scenecut import ChunkSplitter, SceneCutDetector


def _two_scenes(first: int, second: int) -> np.ndarray:
    bright = moving_pattern(first, 48, 64, seed=1)
    dark = 255 - moving_pattern(second, 48, 64, seed=2)
    return np.concatenate([bright, dark])


def test_detector_finds_a_cut_but_not_motion():
    detector = SceneCutDetector()
    clip = _two_scenes(7, 5)
    assert [i for i, frame in enumerate(clip) if detector.is_cut(frame)] == [7]
    pan = moving_pattern(20, 48, 64, seed=3)  # smooth motion: large changes each frame, no cut
    detector = SceneCutDetector()
    assert not any(detector.is_cut(frame) for frame in pan)
    assert not any(SceneCutDetector(threshold=0).is_cut(frame) for frame in clip)


def test_splitter_ends_chunks_at_cuts_and_keeps_every_frame():
    clip = _two_scenes(7, 5)
    splitter = ChunkSplitter(iter(clip))
    chunks = []
    while True:
        chunk = list(splitter.chunk())
        if not chunk:
            break
        chunks.append(chunk)
    assert [len(c) for c in chunks] == [7, 5] and splitter.cuts == [7]
    assert np.array_equal(np.concatenate([np.stack(c) for c in chunks]), clip)


def test_encoded_file_starts_a_chunk_at_the_cut(tmp_path, tiny_model):
    clip = write_clip(tmp_path / "cut.mkv", _two_scenes(11, 10))
    lfq, fixed = tmp_path / "cut.lfq", tmp_path / "fixed.lfq"
    assert run("encode", clip, lfq, "--model", tiny_model, "--gop", "9", "-q").exit_code == 0
    info = lfqcodec.read_info(lfq)
    assert [(c["first_frame"], c["frames"]) for c in info["chunks"]] == [(0, 9), (9, 2), (11, 9), (20, 1)]
    assert info["format_version"] == "2.0"
    run("encode", clip, fixed, "--model", tiny_model, "--gop", "9", "--scenecut", "0", "-q")
    assert [c["frames"] for c in lfqcodec.read_info(fixed)["chunks"]] == [9, 9, 3]
    back = tmp_path / "back.mkv"
    assert run("decode", lfq, back, "--model", tiny_model, "-q").exit_code == 0
    decoded, _ = read_frames(back)
    assert len(decoded) == 21
    part = tmp_path / "part.mkv"
    run("decode", lfq, part, "--model", tiny_model, "--start", "10", "--frames", "3", "-q")
    assert all(np.array_equal(a, b) for a, b in zip(read_frames(part)[0], decoded[10:13], strict=True))

    chunk = info["chunks"][2]
    data = bytearray(lfq.read_bytes())
    data[chunk["offset"] + chunk["bytes"] - 3] ^= 0xFF
    damaged = tmp_path / "damaged.lfq"
    damaged.write_bytes(bytes(data))
    result = run("decode", damaged, tmp_path / "s.mkv", "--model", tiny_model, "-q", "--salvage")
    assert result.exit_code == 0 and "could not recover frames 11-19" in result.output
    salvaged, _ = read_frames(tmp_path / "s.mkv")
    assert len(salvaged) == 21 and all(np.array_equal(a, b) for a, b in zip(salvaged[:11], decoded[:11]))
    truncated = tmp_path / "truncated.lfq"
    truncated.write_bytes(lfq.read_bytes()[: chunk["offset"] + 10])  # chunks 2, 3 and the index gone
    result = run("decode", truncated, tmp_path / "t.mkv", "--model", tiny_model, "-q", "--salvage")
    assert result.exit_code == 0 and "could not recover frames 11-20" in result.output
    assert all(np.array_equal(a, b) for a, b in zip(read_frames(tmp_path / "t.mkv")[0][:11], decoded[:11]))
