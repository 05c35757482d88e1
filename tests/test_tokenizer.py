import pytest
import torch
from conftest import TINY_CONFIG, tiny_tokenizer

from lfqcodec.model.config import TokenizerConfig
from lfqcodec.model.layers import depth_to_space, depth_to_time, space_to_depth, streaming, time_to_depth
from lfqcodec.model.tokenizer import TokenizerNet


def test_patchify_inverses():
    x = torch.randn(2, 3, 8, 16, 24)
    assert torch.equal(depth_to_space(space_to_depth(x, 4), 4), x)
    assert torch.equal(depth_to_time(time_to_depth(x, 4), 4), x)


@pytest.mark.parametrize("frames,latent", [(1, 1), (5, 2), (17, 5)])
def test_shapes_image_and_video(frames, latent):
    model = tiny_tokenizer()
    video = torch.rand(1, 3, frames, 24, 32) * 2 - 1
    bits = model.encode(video)
    assert bits.shape == (1, 12, latent, 3, 4) and bits.dtype == torch.bool
    assert model.decode(bits).shape == video.shape


def test_sixteen_times_spatial_config():
    cfg = TokenizerConfig(num_bits=8, channels=(8, 8, 8), encoder_blocks=(1, 1, 1), decoder_blocks=(1, 1, 1),
                          quality_bits={"low": 2, "medium": 4, "high": 8})  # fmt: skip
    assert cfg.spatial_factor == 16
    bits = TokenizerNet(cfg).encode(torch.zeros(1, 3, 5, 32, 48))
    assert bits.shape == (1, 8, 2, 2, 3)


def test_first_frame_is_coded_alone_and_encoder_is_causal():
    model = tiny_tokenizer()
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    changed = video.clone()
    changed[:, :, 5:] = torch.rand_like(changed[:, :, 5:])  # alter only the last group
    a, b = model.encode(video), model.encode(changed)
    assert torch.equal(a[:, :, :2], b[:, :, :2])
    assert not torch.equal(a[:, :, 2:], b[:, :, 2:])
    assert torch.equal(model.encode(video[:, :, :1]), a[:, :, :1])  # still image == first latent frame


def test_streamed_encoding_gives_bit_identical_tokens():
    model = tiny_tokenizer()
    video = torch.rand(1, 3, 21, 24, 32) * 2 - 1
    whole = model.encode(video)
    with streaming(model):
        pieces = [model.encode(video[:, :, :1]), model.encode(video[:, :, 1:9], first=False),
                  model.encode(video[:, :, 9:13], first=False), model.encode(video[:, :, 13:], first=False)]  # fmt: skip
    assert torch.equal(torch.cat(pieces, dim=2), whole)
    full = model.decode(whole)
    with streaming(model):
        parts = [model.decode(whole[:, :, :1]), model.decode(whole[:, :, 1:4], first=False),
                 model.decode(whole[:, :, 4:], first=False)]  # fmt: skip
    assert torch.allclose(torch.cat(parts, dim=2), full, atol=1e-5)


def test_decoder_accepts_bit_prefixes():
    model = tiny_tokenizer()
    bits = model.encode(torch.rand(1, 3, 5, 16, 16) * 2 - 1)
    for keep in TINY_CONFIG.quality_bits.values():
        assert model.decode(bits[:, :keep]).shape == (1, 3, 5, 16, 16)


def test_config_roundtrip_and_validation():
    cfg = TokenizerConfig()
    assert TokenizerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        TokenizerConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError):
        TokenizerConfig(num_bits=8, quality_bits={"high": 9})
