"""``lfqcodec.Tokenizer``: tokens of frames in memory equal those of the files, both ways."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, moving_pattern

import lfqcodec
from lfqcodec.api import decode_frames, encode_frames
from lfqcodec.base.errors import LfqError
from lfqcodec.codec.scenecut import DEFAULT_THRESHOLD
from lfqcodec.tokens.tokenizer_api import Tokenizer, chunk_layout

HEIGHT, WIDTH = 21, 37  # not multiples of 8


@pytest.fixture(scope="module")
def frames():
    """5 frames, then a scene cut (the pattern inverted) and 9 more: 14 frames."""
    return np.concatenate([moving_pattern(5, HEIGHT, WIDTH, seed=1), 255 - moving_pattern(9, HEIGHT, WIDTH, seed=8)])


@pytest.fixture(scope="module")
def tok(tiny_model):
    return Tokenizer.load(tiny_model, device="cpu", precision="fp32", quality="high")


def _file(tmp_path, frames, tiny_model, quality, gop, scenecut):
    path = tmp_path / f"{quality}-{gop}-{scenecut}.lfq"
    encode_frames(iter(frames), path, width=WIDTH, height=HEIGHT, fps=Fraction(25), model=tiny_model,
                  quality=quality, gop=gop, scenecut=scenecut, device="cpu", precision="fp32")  # fmt: skip
    return path


@pytest.mark.parametrize("quality,gop,scenecut", [("low", 5, 0), ("medium", 9, 0), ("high", 33, DEFAULT_THRESHOLD)])
def test_encode_equals_tokens_of_the_file_and_decode_equals_its_decode(tmp_path, frames, tiny_model, quality, gop,
                                                                         scenecut):  # fmt: skip
    tok = Tokenizer.load(tiny_model, device="cpu", precision="fp32", quality=quality)
    assert tok.bits == TINY_CONFIG.quality_bits[quality]
    path = _file(tmp_path, frames, tiny_model, quality, gop, scenecut)
    clip = tok.encode_clip(frames, gop=gop, scenecut=scenecut)
    tokens = lfqcodec.read_tokens(path)
    assert np.array_equal(clip.indices, tokens.indices)
    assert list(clip.chunk_frames) == [c["frames"] for c in lfqcodec.read_info(path)["chunks"]]
    if scenecut:
        assert clip.chunk_frames == (5, 9)  # the cut starts a chunk of 9 frames: not 1 + 4k
    expected = np.stack(list(decode_frames(path, device="cpu", precision="fp32", model=tiny_model)))
    assert np.array_equal(tok.decode(clip), expected)
    assert np.array_equal(tok.decode(tokens.indices, chunk_frames=clip.chunk_frames, size=(HEIGHT, WIDTH)), expected)


def test_torch_batches_give_the_same_tokens_and_pixels(tok, frames):
    clip = tok.encode_clip(frames, gop=9)
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1
    batch = torch.stack([video, video.flip(-1)])  # B x 3 x T x H x W in [-1, 1]
    indices = tok.encode(batch, gop=9)
    assert indices.shape == (2, *clip.indices.shape) and indices.dtype == torch.int64
    assert np.array_equal(indices[0].numpy(), clip.indices)
    assert np.array_equal(indices[1].numpy(), tok.encode(np.ascontiguousarray(frames[:, :, ::-1]), gop=9))
    back = tok.decode(indices, gop=9, frames=len(frames), size=(HEIGHT, WIDTH))
    assert back.shape == (2, 3, len(frames), HEIGHT, WIDTH) and back.min() >= -1 and back.max() <= 1
    pixels = ((back[0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.array_equal(pixels, tok.decode(clip))


def test_an_edited_region_changes_only_what_the_decoder_sees(tok, frames):
    indices = tok.encode(frames, gop=33)
    edited = indices.copy()
    edited[1:, :1, :2] = (1 << tok.bits) - 1 - edited[1:, :1, :2]
    before, after = tok.decode(indices, frames=len(frames)), tok.decode(edited, frames=len(frames))
    assert before.shape == after.shape == (len(frames), 24, 40, 3)  # the whole grid without a size
    assert np.array_equal(before[0], after[0]) and not np.array_equal(before[1:], after[1:])  # causal


def test_chunk_layout():
    assert chunk_layout(5, 5, 4) == [5, 5, 1]
    assert chunk_layout(5, 5, 4, frames=11) == [5, 5, 1]
    assert chunk_layout(5, 9, 4, frames=14) == [9, 5] and chunk_layout(5, 9, 4, frames=11) == [9, 2]
    with pytest.raises(LfqError, match="do not fit"):
        chunk_layout(5, 9, 4, frames=15)


@pytest.mark.parametrize(
    "bad,message",
    [
        (lambda i: i.astype(np.float64), "not integers"),
        (lambda i: np.where(i == i.flat[0], np.nan, i), "not integers"),
        (lambda i: i + (1 << 12), "outside \\[0, 2\\^12\\)"),
        (lambda i: i - (1 << 20), "outside"),
        (lambda i: i[:, :, :-1], "grid"),
        (lambda i: i[0], "T' x h x w"),
        (lambda i: i[:0], "non-empty"),
        (lambda i: i[:-1], "latent frames"),
    ],
)
def test_bad_indices_are_one_line_errors(tok, frames, bad, message):
    clip = tok.encode_clip(frames, gop=9)
    with pytest.raises(LfqError, match=message):
        tok.decode(bad(clip.indices), chunk_frames=clip.chunk_frames, size=(HEIGHT, WIDTH))


def test_bad_frames_and_settings_are_one_line_errors(tok, frames):
    with pytest.raises(LfqError, match="uint8"):
        tok.encode(frames.astype(np.float32))
    with pytest.raises(LfqError, match="1 \\+ 4k"):
        tok.encode(frames, gop=8)
    with pytest.raises(LfqError, match="NaN"):
        tok.encode(torch.full((1, 3, 2, 8, 8), float("nan")))
    with pytest.raises(LfqError, match="numpy"):
        tok.encode(torch.zeros(1, 3, 2, 8, 8), scenecut=10.0)
    with pytest.raises(LfqError, match="unknown quality"):
        Tokenizer(tok.codec, "ultra")


def test_encode_equals_the_commands_encode_then_tokens(tmp_path, odd_clip, tiny_model):
    from click.testing import CliRunner

    from lfqcodec.cli.commands import main
    from lfqcodec.io.videoio import read_video_frames

    lfq, npz = tmp_path / "a.lfq", tmp_path / "a.npz"
    for args in (["encode", odd_clip, lfq, "--model", tiny_model, "--gop", "5", "--precision", "fp32", "--device",
                  "cpu", "-q"], ["tokens", lfq, npz]):  # fmt: skip
        assert CliRunner().invoke(main, [str(a) for a in args]).exit_code == 0
    frames = np.stack(list(read_video_frames(odd_clip)))
    tok = Tokenizer.load(tiny_model, device="cpu", precision="fp32")
    clip = tok.encode_clip(frames, gop=5, scenecut=DEFAULT_THRESHOLD)  # the command's default scene-cut threshold
    assert np.array_equal(clip.indices, np.load(npz)["indices"]) and list(np.load(npz)["chunk_frames"]) == [5, 5, 1]


def test_the_readme_example_runs(tiny_model, frames):
    tok = lfqcodec.Tokenizer.load(tiny_model, device="cpu", quality="medium")
    clip = tok.encode_clip(frames)
    indices = clip.indices.copy()
    indices[1:, :1, :1] = indices[1:, -1:, -1:]
    edited = tok.decode(clip._replace(indices=indices))
    assert tok.bits == 6 and indices.max() < 2**tok.bits and edited.shape == frames.shape and edited.dtype == np.uint8
