import dataclasses
import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, moving_pattern, tiny_tokenizer

import lfqcodec
from lfqcodec.codec.search import SearchConfig, _loss, _spans, _trade, search_bits, search_candidates
from lfqcodec.model.tokenizer import TokenizerNet


def test_spans_cover_the_grid_in_near_equal_tiles():
    assert _spans(10, 4) == [(0, 3), (3, 7), (7, 10)]
    assert _spans(3, 32) == [(0, 3)]
    for size in range(1, 40):
        spans = _spans(size, 7)
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert all(0 < hi - lo <= 7 for lo, hi in spans)


def _decode_error(model: TokenizerNet, bits: torch.Tensor, keep: int, video: torch.Tensor) -> float:
    return (model.decode(bits[:, :keep]) - video).pow(2).mean().item()


@pytest.mark.parametrize("tile", [32, 2])  # one tile, and a 3 x 3 grid of tiles with context
def test_search_lowers_the_error_of_the_kept_bits_only(tile):
    model = tiny_tokenizer()
    video = torch.from_numpy(moving_pattern(5, 48, 48)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    keep = TINY_CONFIG.quality_bits["medium"]
    with torch.no_grad():
        latents = model.encoder(video)
    plain = latents > 0
    searched = search_bits(model, video, latents, keep, SearchConfig(steps=8, tile=tile, halo=1, temporal_weight=0))
    assert searched.shape == plain.shape and searched.dtype == torch.bool
    assert torch.equal(searched[:, keep:], plain[:, keep:])
    assert not torch.equal(searched[:, :keep], plain[:, :keep])
    assert _decode_error(model, searched, keep, video) < _decode_error(model, plain, keep, video)


def test_flicker_term_is_the_change_of_the_error_including_from_the_previous_chunk():
    steady = torch.full((1, 3, 4, 2, 2), 0.5)  # the same error in every frame: no flicker
    assert _loss(steady, None, 1.0).item() == pytest.approx(0.25)
    assert _loss(steady, torch.full((1, 3, 1, 2, 2), 0.5), 1.0).item() == pytest.approx(0.25)
    jump = _loss(steady, torch.zeros(1, 3, 1, 2, 2), 1.0).item()  # previous chunk's last frame was exact
    assert jump == pytest.approx(0.25 + 0.25 / 4)
    assert _loss(steady, torch.zeros(1, 3, 1, 2, 2), 0.0).item() == pytest.approx(0.25)


def _with_rate_model():
    """A tiny tokenizer, a 9-frame 48x48 clip, its latents, the medium bit count and a context model."""
    from test_container import net_model

    model, rate_model = tiny_tokenizer(), net_model(bits=TINY_CONFIG.num_bits)
    video = torch.from_numpy(moving_pattern(9, 48, 48)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    with torch.no_grad():
        latents = model.encoder(video)
    return model, video, latents, TINY_CONFIG.quality_bits["medium"], rate_model


def _coded_size(bits: torch.Tensor, keep: int, rate_model) -> int:
    from lfqcodec.entropy.coder import encode_bits

    return len(encode_bits(np.ascontiguousarray(bits[0, :keep].numpy()), rate_model))


def test_rate_term_with_a_context_model_keeps_the_bits_cheaper():
    model, video, latents, keep, rate_model = _with_rate_model()
    size = {}
    for weight in (0.0, 8.0):
        cfg = SearchConfig(steps=8, temporal_weight=0, rate_weight=weight, rate_model=rate_model)
        size[weight] = _coded_size(search_bits(model, video, latents, keep, cfg), keep, rate_model)
    assert size[8.0] < size[0.0]


def test_trade_is_psnr_gained_less_the_price_of_the_rate():
    assert _trade((1.0, 100.0), (1.0, 100.0), 6.02) == 0.0
    assert _trade((1.0, 100.0), (0.5, 100.0), 6.02) == pytest.approx(3.0103, abs=1e-4)
    assert _trade((1.0, 100.0), (0.5, 200.0), 6.02) == pytest.approx(3.0103 - 6.02, abs=1e-4)


def test_the_second_candidate_is_each_tiles_best_trade():
    model, video, latents, keep, rate_model = _with_rate_model()
    cfg = SearchConfig(steps=8, temporal_weight=0, rate_weight=0.01, rate_model=rate_model)
    assert len(search_candidates(model, video, latents, keep, cfg)) == 1  # not asked for
    strict = dataclasses.replace(cfg, trade_db_per_doubling=1e6)  # no rise of the rate is worth anything
    found = search_candidates(model, video, latents, keep, strict)
    assert torch.equal(found[0], search_bits(model, video, latents, keep, cfg))
    size = [_coded_size(f, keep, rate_model) for f in found]
    start = _coded_size(latents > 0, keep, rate_model)
    assert size[-1] <= start + 16  # the traded bits do not buy pictures with rate (one tile: coder rounding aside)
    assert all(torch.equal(f[:, keep:], (latents > 0)[:, keep:]) for f in found)


def test_zero_steps_keep_the_encoder_bits():
    model = tiny_tokenizer()
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        latents = model.encoder(video)
    assert torch.equal(search_bits(model, video, latents, 6, SearchConfig(steps=0)), latents > 0)


def test_encode_with_search_decodes_closer_to_the_source(tmp_path, tiny_model):
    frames = moving_pattern(13, 40, 56)  # two chunks: the second is searched given the first's last error
    errors = {}
    for steps in (0, 6):
        lfq = tmp_path / f"s{steps}.lfq"
        report = lfqcodec.encode_frames(list(frames), lfq, width=56, height=40, fps=Fraction(25), model=tiny_model,
                                        gop=9, search_steps=steps)  # fmt: skip
        assert report.header.metadata.get("search_steps") == (str(steps) if steps else None)
        decoded = np.stack([f for f in lfqcodec.decode_frames(lfq, model=tiny_model)])
        errors[steps] = float(np.mean((decoded.astype(float) - frames) ** 2))
    assert errors[6] < errors[0]


def test_negative_search_is_refused(tmp_path, tiny_model):
    with pytest.raises(lfqcodec.LfqError, match="--search"):
        lfqcodec.encode_frames([moving_pattern(1, 16, 16)[0]], tmp_path / "x.lfq", width=16, height=16,
                               fps=Fraction(25), model=tiny_model, search_steps=-1)  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_cli_encode_search_is_recorded_and_shown_by_info(tmp_path, tiny_model):
    from click.testing import CliRunner
    from conftest import write_clip

    from lfqcodec.cli.commands import main

    clip = write_clip(tmp_path / "clip.mkv", moving_pattern(5, 32, 32))
    lfq = tmp_path / "out.lfq"
    result = CliRunner().invoke(main, ["encode", str(clip), str(lfq), "--model", str(tiny_model), "--search", "2", "-q"])
    assert result.exit_code == 0, result.output
    info = CliRunner().invoke(main, ["info", str(lfq)])
    assert "bit search 2 steps" in info.output
