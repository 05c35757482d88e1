"""``decode --start/--frames``: exactly the frames asked for, in order, and no decoder work after them."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import moving_pattern
from test_adapt import _random_update

from lfqcodec.codec.adapt import UpdateSpec
from lfqcodec.codec.chunks import Codec, encode_chunks
from lfqcodec.api import encode_frames
from lfqcodec.model.checkpoint import load_model
from lfqcodec.format.container import LfqWriter, StreamHeader
from lfqcodec.codec.decoding import decode_frames
from lfqcodec.entropy.store import find_for_tokenizer
from lfqcodec.model.tokenizer import Decoder

FRAMES, HEIGHT, WIDTH = 75, 40, 48  # a 5 x 6 grid: not lfqcodec.model.tiling's 4 x 4 probe


@pytest.fixture(scope="module")
def clip():
    return moving_pattern(FRAMES, HEIGHT, WIDTH, seed=3)


def _encoded(tmp_path, clip, model_path, gop: int, update: bool):
    path = tmp_path / f"g{gop}{'u' if update else ''}.lfq"
    if not update:
        encode_frames(iter(clip), path, width=WIDTH, height=HEIGHT, fps=Fraction(25), model=model_path,
                      gop=gop, scenecut=0, device="cpu")  # fmt: skip
        return path
    loaded = load_model(model_path)
    cfg = loaded.config
    codec = Codec(loaded, torch.device("cpu"))
    keep = cfg.quality_bits["medium"]
    grid = (-(-HEIGHT // 8), -(-WIDTH // 8))
    header = StreamHeader(model_id=loaded.model_id, width=WIDTH, height=HEIGHT, frame_count=0, fps=Fraction(25),
                          time_base=Fraction(1, 25), bits=keep, model_bits=cfg.num_bits, temporal_factor=4,
                          spatial_factor=8, gop=gop, grid_height=grid[0], grid_width=grid[1],
                          metadata={"model_name": loaded.name})  # fmt: skip
    payload = _random_update(loaded.tokenizer, UpdateSpec(), seed=5).to_bytes()
    with open(path, "wb") as out:
        writer = LfqWriter(out, header, 3, (2, 0), find_for_tokenizer(loaded.model_id, tmp_path))
        writer.write_update(payload, 1, 2)  # chunks 1 and 2 decode with it, the others without
        for chunk in encode_chunks(codec, iter(clip), WIDTH, HEIGHT, gop, keep, scenecut=0):
            writer.write_chunk(chunk.bits[:keep], chunk.frames)
        writer.close()
    return path


def _count_decoder_steps(monkeypatch) -> list[int]:
    steps: list[int] = []
    forward = Decoder.forward

    def counting(self, codes, first=True):
        if codes.shape[-2:] != (4, 4):  # lfqcodec.model.tiling's probe of the decoder, not a step
            steps.append(codes.shape[2])
        return forward(self, codes, first)

    monkeypatch.setattr(Decoder, "forward", counting)
    return steps


def _expected_steps(gop: int, window: int, start: int, end: int) -> int:
    """Decoder calls for frames ``start .. end - 1``: every block of each chunk up to the one holding the
    chunk's last wanted frame (a block is the first frame, then ``4 * window`` frames)."""
    calls = 0
    for first in range(0, FRAMES, gop):
        last = min(first + gop, FRAMES, end) - 1
        if last < max(first, start):
            continue
        local = last - first
        calls += 1 if local == 0 else 2 + (local - 1) // (4 * window)
    return calls


@pytest.mark.parametrize("gop,update", [(5, False), (17, False), (33, False), (17, True)])
@pytest.mark.parametrize("window", [1, 2])
def test_frame_ranges_match_a_full_decode(tmp_path, clip, tiny_model, monkeypatch, gop, update, window):
    path = _encoded(tmp_path, clip, tiny_model, gop, update)
    model = load_model(tiny_model)
    full = np.stack(list(decode_frames(path, model=model, device="cpu", window=window)))
    assert len(full) == FRAMES
    steps = _count_decoder_steps(monkeypatch)
    rng = np.random.default_rng(gop * 10 + window)
    ranges = [(0, 1), (0, 10), (20, 1), (FRAMES - 1, 1), (gop - 1, 2), (gop, gop), (3, FRAMES)]
    ranges += [(int(s), int(rng.integers(1, FRAMES - s + 1))) for s in rng.integers(0, FRAMES, 6)]
    for start, count in ranges:
        steps.clear()
        got = list(decode_frames(path, model=model, device="cpu", window=window, start=start, frames=count))
        end = min(FRAMES, start + count)
        assert len(got) == end - start, (start, count)
        assert np.array_equal(np.stack(got), full[start:end]), (start, count)
        assert len(steps) == _expected_steps(gop, window, start, end), (start, count, steps)
