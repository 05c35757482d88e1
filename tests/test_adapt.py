"""The per-clip decoder update: parameter choice, payload, application, fitting."""

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, moving_pattern, tiny_tokenizer

from lfqcodec.codec.adapt import DecoderUpdate, UpdateSpec, UpdateState, applied, quantize, slots
from lfqcodec.presets.adapt_fit import ChunkTarget, FitConfig, fit_update
from lfqcodec.base.errors import FormatError
from lfqcodec.model.layers import ChannelNorm
from lfqcodec.model.quantizer import bits_to_codes


def _clip(frames: int = 5, size: int = 32) -> torch.Tensor:
    return torch.from_numpy(moving_pattern(frames, size, size)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1


def _target(model, video: torch.Tensor, keep: int) -> ChunkTarget:
    with torch.no_grad():
        bits = model.encoder(video) > 0
    return ChunkTarget(bits_to_codes(bits[:, :keep], TINY_CONFIG.num_bits), video)


def _random_update(model, spec: UpdateSpec, seed: int = 0) -> DecoderUpdate:
    generator = torch.Generator().manual_seed(seed)
    return quantize(spec, [torch.randn(s.shape, generator=generator) * 0.05 for s in slots(model.decoder, spec)])


def test_slots_are_chosen_by_module_type():
    decoder = tiny_tokenizer().decoder
    norms = [m for m in decoder.modules() if isinstance(m, ChannelNorm)]
    convs = [m for m in decoder.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(slots(decoder, UpdateSpec(norms=True, biases=False))) == 2 * len(norms)
    assert len(slots(decoder, UpdateSpec(norms=False, biases=True))) == len(convs)
    trunk = [c for c in convs if not any(c is m for m in decoder.refine.modules())]
    lora = slots(decoder, UpdateSpec(norms=False, biases=False, lora_rank=2))
    assert [s.lora for s in lora] == ["A", "B"] * len(trunk)
    refiner = slots(decoder, UpdateSpec(norms=False, biases=False, refiner=True))
    assert len(refiner) == len(list(decoder.refine.parameters()))


@pytest.mark.parametrize("spec", [UpdateSpec(), UpdateSpec(bits=4, lora_rank=1), UpdateSpec(False, False, 0, True, 5)])
def test_payload_round_trip(spec):
    model = tiny_tokenizer()
    update = _random_update(model, spec)
    data = update.to_bytes()
    back = DecoderUpdate.from_bytes(data, model.decoder)
    assert back.spec == spec and back.steps == update.steps
    assert all(np.array_equal(a, b) for a, b in zip(back.values, update.values))
    assert back.to_bytes() == data


def test_applied_changes_the_decoder_and_restores_it():
    model = tiny_tokenizer()
    codes = _target(model, _clip(), 6).codes
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        plain = model.decoder(codes)
        with applied(model.decoder, _random_update(model, UpdateSpec(lora_rank=1))):
            changed = model.decoder(codes)
        again = model.decoder(codes)
    assert not torch.allclose(plain, changed)
    assert torch.equal(plain, again)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_update_state_applies_each_payload_once_and_restores():
    model = tiny_tokenizer()
    codes = _target(model, _clip(), 6).codes
    first, second = (_random_update(model, UpdateSpec(), seed).to_bytes() for seed in (1, 2))
    state = UpdateState(model.decoder)
    with torch.no_grad():
        plain = model.decoder(codes)
        state.use(0, first)
        one = model.decoder(codes)
        state.use(0, first)  # same record: nothing re-applied
        assert torch.equal(model.decoder(codes), one)
        state.use(1, second)
        two = model.decoder(codes)
        state.use(None, None)
        assert torch.equal(model.decoder(codes), plain) and not torch.allclose(one, two)
        with applied(model.decoder, DecoderUpdate.from_bytes(second, model.decoder)):
            assert torch.equal(model.decoder(codes), two)
    state.close()


@pytest.mark.parametrize("damage", ["truncate", "magic", "flip_values", "other_model"])
def test_damaged_or_foreign_payload_is_refused(damage):
    model = tiny_tokenizer()
    data = bytearray(_random_update(model, UpdateSpec()).to_bytes())
    decoder = model.decoder
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "magic":
        data[0] ^= 0xFF
    elif damage == "flip_values":
        data[-3] ^= 0xFF
    else:
        from dataclasses import replace

        from lfqcodec.model.tokenizer import TokenizerNet

        decoder = TokenizerNet(replace(TINY_CONFIG, decoder_blocks=(1, 2))).decoder
    with pytest.raises(FormatError, match="decoder update"):
        DecoderUpdate.from_bytes(bytes(data), decoder)


def test_fit_lowers_the_error_and_is_reproducible():
    model = tiny_tokenizer()
    target = _target(model, _clip(5, 32), 6)
    cfg = FitConfig(steps=6, lr=1e-2, tile=2, halo=1)
    losses = []
    update = fit_update(model.decoder, [target], UpdateSpec(lora_rank=1), cfg, lambda step, loss: losses.append(loss))
    again = fit_update(model.decoder, [target], UpdateSpec(lora_rank=1), cfg)
    assert update.to_bytes() == again.to_bytes()
    with torch.no_grad():
        error = (model.decoder(target.codes) - target.video).pow(2).mean()
        with applied(model.decoder, update):
            fitted = (model.decoder(target.codes) - target.video).pow(2).mean()
    assert fitted < error
    assert all(p.requires_grad for p in model.parameters())
