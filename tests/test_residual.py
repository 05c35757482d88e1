"""Residual (magnitude) bits after the sign bits: the warm start from a sign-only model, the levels,
training of the residual reader alone, files at every level."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_CONFIG, moving_pattern, tiny_tokenizer
from test_train import _training_data

from lfqcodec.api import encode_frames
from lfqcodec.model.checkpoint import load_model, save_model
from lfqcodec.cli.commands import main
from lfqcodec.codec.decoding import decode_frames
from lfqcodec.base.errors import LfqError
from lfqcodec.model.quantizer import decoder_codes
from lfqcodec.training.surgery import calibrate_thresholds, prepare_residual, residual_config
from lfqcodec.model.tokenizer import TokenizerNet
from lfqcodec.training.recipe import TrainConfig, residual_keep_choices, warm_start
from lfqcodec.training.train import train

RESIDUAL_BITS = 6  # of TINY_CONFIG's 12: signs 0-5, then the magnitudes of channels 0-5


def _video(frames: int = 9, size: int = 32, seed: int = 0) -> torch.Tensor:
    clip = torch.from_numpy(moving_pattern(frames, size, size, seed=seed)).float() / 127.5 - 1
    return clip.permute(3, 0, 1, 2)[None]


def _grown(train_reader: bool = False) -> tuple[TokenizerNet, TokenizerNet]:
    source = tiny_tokenizer()
    grown = TokenizerNet(residual_config(TINY_CONFIG, RESIDUAL_BITS))
    warm_start(grown, source)
    prepare_residual(grown)
    calibrate_thresholds(grown, [_video(seed=s) for s in range(3)])
    if train_reader:  # a reader that does something, as after training
        with torch.no_grad():
            for p in grown.decoder.residual.parameters():
                p.normal_(0, 0.1)
    return source, grown.eval()


def test_residual_config_levels_and_design():
    cfg = residual_config(TINY_CONFIG, RESIDUAL_BITS)
    assert cfg.sign_bits == 6 and cfg.quality_bits == {"low": 3, "medium": 6, "high": 12}
    assert "6 sign bits + 6 residual bits" in cfg.design
    assert residual_config(cfg, RESIDUAL_BITS) == cfg  # training a grown model further
    with pytest.raises(ValueError):
        residual_config(TINY_CONFIG, 7)  # more residual bits than signs left
    assert residual_keep_choices(cfg) == [7, 8, 9, 10, 11, 12]


def test_warm_start_keeps_sign_tokens_and_pictures_exactly():
    source, grown = _grown()
    video = _video(seed=7)
    old, new = source.encode(video), grown.encode(video)
    assert torch.equal(old[:, :6], new[:, :6])  # low and medium tokens: bit-exact
    share = new[:, 6:].float().mean().item()
    assert 0.1 < share < 0.6  # residual bits: about a third beyond their thresholds
    for keep in (3, 6):
        assert torch.equal(source.decode(old[:, :keep]), grown.decode(new[:, :keep]))
    # at step 0 the top level decodes as the 4-level values sign * (1 + 0.25 magnitude) (the reader's
    # last convolution starts at zero), and with a start of 0 as medium
    codes = torch.where(new[:, :6], 1.0, -1.0) * (1 + 0.25 * torch.where(new[:, 6:], 1.0, -1.0))
    as_values = grown.decoder(torch.cat([codes, torch.zeros_like(codes)], dim=1))
    assert torch.allclose(grown.decode(new), as_values, atol=1e-4)  # the same sums in another order
    prepare_residual(grown, start=0.0)
    assert torch.allclose(grown.decode(new), grown.decode(new[:, :6]), atol=1e-6)


def test_a_trained_reader_changes_only_the_residual_levels():
    source, grown = _grown(train_reader=True)
    bits = grown.encode(_video(seed=2))
    assert torch.equal(source.decode(bits[:, :6]), grown.decode(bits[:, :6]))
    assert not torch.allclose(grown.decode(bits), grown.decode(bits[:, :6]), atol=1e-4)
    # per sample: a batch mixing levels decodes each sample as it would alone
    codes = decoder_codes(bits.repeat(2, 1, 1, 1, 1), 12, RESIDUAL_BITS)
    codes[1, 6:] = 0
    both = grown.decoder(codes)
    assert torch.allclose(both[1:], grown.decode(bits[:, :6]), atol=1e-5)
    assert torch.allclose(both[:1], grown.decode(bits), atol=1e-5)


def test_decoder_codes_pair_each_magnitude_with_its_sign():
    bits = torch.tensor([True, False, True, True])[None, :, None, None, None]  # signs +, -; magnitudes 1, 1
    codes = decoder_codes(bits, 4, residual_bits=2)
    assert codes.flatten().tolist() == [1, -1, 1, -1]  # sign * (+1 beyond the threshold)
    assert decoder_codes(bits[:, :3], 4, 2).flatten().tolist() == [1, -1, 1, 0]  # a dropped bit is 0
    assert decoder_codes(~bits, 4, 2).flatten().tolist() == [-1, 1, 1, -1]  # within: -sign


@pytest.fixture(scope="module")
def residual_model(tmp_path_factory):
    _, grown = _grown(train_reader=True)
    path = tmp_path_factory.mktemp("residual") / "tiny-residual.safetensors"
    save_model(path, grown, "tiny-residual")
    return path


@pytest.mark.parametrize("quality", ["low", "medium", "high"])
def test_files_round_trip_at_every_level_with_one_and_two_threads(tmp_path, residual_model, quality):
    clip = moving_pattern(13, 24, 40, seed=4)
    path = tmp_path / f"{quality}.lfq"
    encode_frames(iter(clip), path, width=40, height=24, fps=Fraction(25), model=residual_model, quality=quality,
                  gop=9, device="cpu")  # fmt: skip
    threads = torch.get_num_threads()
    decoded = {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            decoded[n] = np.stack(list(decode_frames(path, model=residual_model, device="cpu")))
    finally:
        torch.set_num_threads(threads)
    assert decoded[1].shape == (13, 24, 40, 3) and np.array_equal(decoded[1], decoded[2])
    loaded = load_model(residual_model)
    if quality == "high":  # the file's bits are the network's tokens, all 12 of them
        video = torch.from_numpy(clip[:9]).float().permute(3, 0, 1, 2)[None] / 127.5 - 1
        video = torch.nn.functional.pad(video.flatten(1, 2), (0, 0, 0, 8), mode="replicate").view(1, 3, 9, 32, 40)
        assert loaded.tokenizer.encode(video)[:, 6:].any()


def test_bit_search_is_refused_at_residual_levels(tmp_path, residual_model):
    clip = moving_pattern(5, 16, 16)
    with pytest.raises(LfqError, match="sign bits only"):
        encode_frames(iter(clip), tmp_path / "s.lfq", width=16, height=16, fps=Fraction(25), model=residual_model,
                      quality="high", search_steps=2, device="cpu")  # fmt: skip


def test_training_the_reader_alone_keeps_every_other_tensor(tmp_path, tiny_model):
    data, val = _training_data(tmp_path)
    out = tmp_path / "run"
    cfg = TrainConfig(steps=2, batch=2, image_batch=2, val_every=2, log_every=1, warmup=1, train_only="residual")
    from lfqcodec.training.data import SamplerConfig

    train(residual_config(TINY_CONFIG, RESIDUAL_BITS), cfg, SamplerConfig(frames=5, size=32, image_size=32, max_scale=2),
          [data], [val], out, init=str(tiny_model), device="cpu")  # fmt: skip
    start = load_model(tiny_model).tokenizer.state_dict()
    trained = torch.load(out / "state.pt", weights_only=True)["model"]
    for name, value in start.items():
        expected = value.float()
        if name == "decoder.inp.conv.weight":
            expected = expected.clone()
            assert torch.equal(trained[name][:, :6], expected[:, :6])  # the sign columns stay exactly
            assert not torch.equal(trained[name][:, 6:], 0.25 * expected[:, :6])  # the residual columns learn
            continue
        assert torch.equal(trained[name], expected), name
    assert trained["quantizer.thresholds"].min() > 0
    assert not all(torch.equal(trained[n], torch.zeros_like(trained[n])) for n in trained if ".residual.out." in n)


def test_cli_train_residual_bits_needs_init_and_one_design(tmp_path, tiny_model):
    data, val = _training_data(tmp_path)
    common = ["train", "--data", data, "--val", val, "--out", tmp_path / "run", "--steps", 1, "--batch", 1,
              "--frames", 5, "--size", 32, "--device", "cpu", "--residual-bits", 6]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in common])
    assert result.exit_code == 1 and "--residual-bits needs --init" in result.output
    result = CliRunner().invoke(main, [str(a) for a in [*common[:-1], 9, "--init", tiny_model]])
    assert result.exit_code == 1 and "--residual-bits" in result.output


def test_a_file_of_a_retired_model_names_the_commit_that_reads_it(tmp_path, residual_model):
    from dataclasses import replace

    from lfqcodec.format.container import LfqReader
    from lfqcodec.codec.decoding import find_model_for
    from lfqcodec.base.errors import ModelError

    path = tmp_path / "a.lfq"
    encode_frames(iter(moving_pattern(5, 16, 16)), path, width=16, height=16, fps=Fraction(25), model=residual_model,
                  device="cpu")  # fmt: skip
    with open(path, "rb") as handle:
        header = LfqReader(handle).header
    v5 = replace(header, model_id=bytes.fromhex("86ca7c0e1b8fcbf13c755d9c1301753f"))
    with pytest.raises(ModelError, match="lfq-base v5.*commit 2c2f48f"):
        find_model_for(v5)


def test_the_design_of_an_installed_model_is_read_from_its_file(residual_model, tiny_model):
    from lfqcodec.model.checkpoint import installed_config

    grown = load_model(residual_model)
    config = installed_config(grown.model_id, residual_model.parent)
    assert config is not None and config.residual_bits == RESIDUAL_BITS
    assert config.design == "LFQ, 6 sign bits + 6 residual bits (magnitude of channels 0-5)"
    assert installed_config(load_model(tiny_model).model_id, residual_model.parent) is None
    assert "12 sign bits" in load_model(tiny_model).config.design


def test_no_entropy_model_serves_a_tokenizer_it_was_not_fitted_for(tmp_path, residual_model):
    from lfqcodec.model.checkpoint import MODELS_DIR
    from lfqcodec.entropy.store import find_for_tokenizer

    grown = load_model(residual_model)
    assert find_for_tokenizer(grown.model_id, MODELS_DIR) is None  # v6's tables code v6's bits only
    report = encode_frames(iter(moving_pattern(5, 16, 16)), tmp_path / "z.lfq", width=16, height=16, fps=Fraction(25),
                           model=residual_model, device="cpu")  # fmt: skip
    assert any("no entropy model for tokenizer" in w for w in report.warnings)
