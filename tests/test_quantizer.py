import pytest
import torch

from lfqcodec.model.quantizer import (
    LookupFreeQuantizer,
    bit_correlation,
    bits_to_codes,
    bits_to_indices,
    factorize_indices,
    indices_to_bits,
    unfactorize_indices,
)


def test_bit_order_is_lsb_first_channel_i_is_bit_i():
    bits = torch.zeros(5, dtype=torch.bool)
    bits[0] = True
    bits[3] = True
    assert bits_to_indices(bits).item() == 1 + 8


def test_bits_to_index_to_bits_is_identity():
    gen = torch.Generator().manual_seed(0)
    bits = torch.rand(4, 18, 3, 5, generator=gen) > 0.5
    indices = bits_to_indices(bits, dim=1)
    assert indices.shape == (4, 3, 5)
    assert torch.equal(indices_to_bits(indices, 18, dim=1), bits)
    all_indices = torch.arange(2**10)
    assert torch.equal(bits_to_indices(indices_to_bits(all_indices, 10)), all_indices)


def test_factorization_splits_into_low_and_high_bits():
    indices = torch.tensor([0, 1, 511, 512, 2**18 - 1, 123456])
    sub = factorize_indices(indices, 18, 9)
    assert sub.shape == (6, 2)
    assert torch.equal(sub[:, 0], indices & 511)
    assert torch.equal(sub[:, 1], indices >> 9)
    assert torch.equal(unfactorize_indices(sub, 9), indices)
    uneven = factorize_indices(indices, 18, 8)  # 8 + 8 + 2 bits
    assert uneven.shape == (6, 3) and int(uneven[:, 2].max()) <= 3
    assert torch.equal(unfactorize_indices(uneven, 8), indices)


def test_codes_are_signs_and_dropped_bits_are_zero():
    bits = torch.tensor([[True, False]]).T.reshape(1, 2, 1, 1, 1)
    codes = bits_to_codes(bits, num_bits=4, dim=1)
    assert codes.flatten().tolist() == [1.0, -1.0, 0.0, 0.0]


def test_quantizer_straight_through_and_losses():
    q = LookupFreeQuantizer(num_bits=10, group_bits=4)
    z = torch.randn(2, 10, 2, 3, 3, requires_grad=True)
    out = q(z, keep_bits=torch.tensor([10, 4]))
    assert torch.equal(out.bits, z > 0)
    assert torch.equal(out.codes[0].detach(), out.bits[0].float() * 2 - 1)
    assert (out.codes[1, 4:] == 0).all()
    for loss in (out.entropy_loss, out.commitment_loss):
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
    (out.codes.sum() + out.entropy_loss + out.commitment_loss).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert 0 <= out.token_entropy.item() <= 10 and 0 <= out.codebook_entropy.item() <= 10 + 1e-4


def test_entropy_penalty_prefers_confident_diverse_tokens():
    q = LookupFreeQuantizer(num_bits=8)
    diverse = torch.randn(1, 8, 1, 64, 64) * 5  # confident signs, all codes used
    collapsed = torch.full((1, 8, 1, 64, 64), 5.0)  # one code everywhere
    unsure = torch.randn(1, 8, 1, 64, 64) * 0.01  # signs near zero
    assert q(diverse).entropy_loss < q(collapsed).entropy_loss
    assert q(diverse).entropy_loss < q(unsure).entropy_loss


def test_bit_correlation_is_zero_for_independent_bits_and_one_for_copies():
    torch.manual_seed(0)
    independent = torch.randn(2, 8, 4, 16, 16)
    assert bit_correlation(independent).item() < 0.01
    copies = independent[:, :1].repeat(1, 8, 1, 1, 1)
    assert bit_correlation(copies).item() == pytest.approx(1.0, abs=1e-3)
    latents = independent.clone().requires_grad_(True)
    bit_correlation(latents).backward()
    assert torch.isfinite(latents.grad).all()
