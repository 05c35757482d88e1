"""Lookup-Free Quantization (Yu et al., "Language Model Beats Diffusion", MAGVIT-v2, 2023).

Each latent channel is quantized to its sign, so a token of ``B`` channels *is* ``B`` bits and no
codebook is looked up. Bit order (fixed by ``docs/FORMAT.md``): **channel ``i`` is bit ``i`` of the
token index**, least significant first: ``index = sum(2**i for i where channel i > 0)``.

Nested rates: the decoder is trained with random prefixes of the bits kept (the dropped channels
are fed as ``0``, "unknown"), so one network serves several operating points: a quality level keeps
the first ``k`` bits of every token.

Residual bits (``TokenizerConfig.residual_bits = R > 0``): the token's first ``S = num_bits - R``
bits are signs of latent channels ``0 .. S-1`` as above, and bit ``S + c`` (``c < R``) is the
magnitude bit of channel ``c``: ``|z_c| > a_c``, with ``a_c`` a per-channel threshold stored with the
weights (``LookupFreeQuantizer.thresholds``). Sign and magnitude together are a 4-level scalar
quantizer of ``z_c``, so these bits carry what the signs cannot, by construction (the bits after the
first 16 of a sign-only model were found to repeat the first 16). The decoder reads decoder-input
channel ``S + c`` as ``sign_c * (+1 if beyond the threshold else -1)`` (``0`` where the bit is
dropped), and reads them only through parts that a sign-only level never runs
(:class:`lfqcodec.model.tokenizer.ResidualReader`), so the sign levels decode as without them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn


class QuantizerOutput(NamedTuple):
    codes: torch.Tensor  # N x B x T x H x W, values in {-1, 0, +1} (0 = dropped bit), straight-through
    bits: torch.Tensor  # N x B x T x H x W, bool, True where the latent is positive
    entropy_loss: torch.Tensor  # per-token entropy - codebook entropy (fp32 scalar); minimise
    commitment_loss: torch.Tensor  # mean (z - sign(z))^2 (fp32 scalar)
    token_entropy: torch.Tensor  # mean per-token entropy in bits (diagnostic)
    codebook_entropy: torch.Tensor  # entropy of the batch-average code distribution in bits (diagnostic)
    latents: torch.Tensor  # the quantizer's input z (fp32), for losses on the soft bits


def _bit_weights(num_bits: int, device: torch.device | None = None) -> torch.Tensor:
    return torch.pow(2, torch.arange(num_bits, dtype=torch.int64, device=device))


def bits_to_indices(bits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Bool bits along ``dim`` -> int64 token indices (bit ``i`` weighs ``2**i``)."""
    bits = bits.movedim(dim, -1).to(torch.int64)
    return (bits * _bit_weights(bits.shape[-1], bits.device)).sum(-1)


def indices_to_bits(indices: torch.Tensor, num_bits: int, dim: int = -1) -> torch.Tensor:
    """Inverse of :func:`bits_to_indices`: int64 indices -> bool bits placed along ``dim``."""
    bits = (indices.unsqueeze(-1) & _bit_weights(num_bits, indices.device)) != 0
    return bits.movedim(-1, dim)


def factorize_indices(indices: torch.Tensor, num_bits: int, sub_bits: int) -> torch.Tensor:
    """Split ``num_bits``-bit indices into ``ceil(num_bits / sub_bits)`` sub-token indices.

    Sub-token ``j`` holds bits ``j*sub_bits ... (j+1)*sub_bits - 1``, so an 18-bit token with
    ``sub_bits=9`` becomes ``(index & 511, index >> 9)``. Returns ``indices.shape + (n_sub,)``.
    """
    n_sub = math.ceil(num_bits / sub_bits)
    shifts = torch.arange(n_sub, dtype=torch.int64, device=indices.device) * sub_bits
    return (indices.unsqueeze(-1) >> shifts) & ((1 << sub_bits) - 1)


def unfactorize_indices(sub_indices: torch.Tensor, sub_bits: int) -> torch.Tensor:
    """Inverse of :func:`factorize_indices`."""
    shifts = torch.arange(sub_indices.shape[-1], dtype=torch.int64, device=sub_indices.device) * sub_bits
    return (sub_indices.to(torch.int64) << shifts).sum(-1)


def bits_to_codes(bits: torch.Tensor, num_bits: int | None = None, dim: int = 1) -> torch.Tensor:
    """Bool bits -> float codes in {-1, +1}; pad with ``0`` channels up to ``num_bits`` along ``dim``."""
    codes = bits.to(torch.float32) * 2 - 1
    if num_bits is not None and num_bits > bits.shape[dim]:
        shape = list(codes.shape)
        shape[dim] = num_bits - bits.shape[dim]
        codes = torch.cat([codes, codes.new_zeros(shape)], dim=dim)
    return codes


def decoder_codes(bits: torch.Tensor, num_bits: int, residual_bits: int = 0, dim: int = 1) -> torch.Tensor:
    """Token bits (bool, the first ``b <= num_bits`` along ``dim``) -> the decoder's input codes:
    ``num_bits`` channels, ``+-1`` for each sign bit, ``sign * (+-1)`` for each residual bit (channel
    ``S + c`` pairs with sign ``c``), ``0`` for each dropped bit."""
    codes = bits_to_codes(bits, num_bits, dim)
    sign_bits = num_bits - residual_bits
    present = bits.shape[dim] - sign_bits
    if residual_bits and present > 0:
        codes = codes.movedim(dim, 0).clone()
        codes[sign_bits : sign_bits + present] *= codes[:present]
        codes = codes.movedim(0, dim)
    return codes


def keep_mask(num_bits: int, keep_bits: torch.Tensor) -> torch.Tensor:
    """``N x num_bits x 1 x 1 x 1`` float mask: 1 for bits ``< keep_bits[n]`` of sample ``n``, else 0."""
    channel = torch.arange(num_bits, device=keep_bits.device).view(1, -1, 1, 1, 1)
    return (channel < keep_bits.view(-1, 1, 1, 1, 1)).float()


def straight_through_sign(z: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``z > 0`` else ``-1`` (the bit rule), with the gradient of the identity."""
    return z + (torch.where(z > 0, 1.0, -1.0).to(z.dtype) - z).detach()


def bit_correlation(latents: torch.Tensor) -> torch.Tensor:
    """Mean squared correlation between two different bits of a token, over the tokens of each sample.

    The bits' soft values ``tanh(2 z)`` (the quantizer's soft assignment ``sigmoid(4 z)`` rescaled to
    [-1, 1]) of each sample in ``N x B x T x H x W`` are correlated over its ``T x H x W`` tokens; the
    result (fp32 scalar, 0 for independent bits, 1 for copies) is averaged over the ``B (B - 1)``
    pairs and the samples. The entropy penalty makes each group of bits uniform over a batch but says
    nothing about one bit repeating another inside a clip: a bit that a linear function of the
    others predicts adds rate and little information. Minimised as a loss it asks every bit for
    information of its own."""
    with torch.autocast(latents.device.type, enabled=False):
        soft = torch.tanh(2 * latents.float()).flatten(2)  # N x B x tokens
        soft = soft - soft.mean(-1, keepdim=True)
        soft = soft / soft.pow(2).mean(-1, keepdim=True).add(1e-4).sqrt()
        corr = soft @ soft.transpose(1, 2) / soft.shape[-1]  # N x B x B
        num_bits = corr.shape[-1]
        off_diagonal = corr - torch.diag_embed(torch.diagonal(corr, dim1=1, dim2=2))
        return off_diagonal.pow(2).sum((1, 2)).mean() / max(1, num_bits * (num_bits - 1))


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * torch.log2(p) + (1 - p) * torch.log2(1 - p))


class LookupFreeQuantizer(nn.Module):
    """Sign quantizer with the MAGVIT-v2 entropy penalty and a commitment loss.

    The soft assignment of a latent ``z`` to the two codes ``+-1`` of its channel is
    ``p(+1) = sigmoid(4 z / temperature)`` (a softmax over negative squared distances). Per-token
    entropy is the sum of the bits' binary entropies; the codebook entropy is computed over groups
    of ``group_bits`` bits (2**group_bits codes each) because 2**B codes are too many to enumerate.
    All loss terms are computed in fp32, even under autocast.
    """

    def __init__(self, num_bits: int, group_bits: int = 8, temperature: float = 1.0, residual_bits: int = 0):
        super().__init__()
        self.num_bits = num_bits
        self.residual_bits = residual_bits
        self.sign_bits = num_bits - residual_bits
        if residual_bits:  # the magnitude thresholds a_c (calibrated: lfqcodec.training.surgery.add_residual_bits)
            self.register_buffer("thresholds", torch.ones(residual_bits))
        self.group_bits = min(group_bits, self.sign_bits)
        self.temperature = temperature
        codes = indices_to_bits(torch.arange(2**self.group_bits), self.group_bits).float()
        self.register_buffer("group_codebook", codes, persistent=False)  # 2**g x g, {0, 1}

    def forward(self, z: torch.Tensor, keep_bits: torch.Tensor | None = None) -> QuantizerOutput:
        """Quantize ``z`` (``N x B x T x H x W``).

        ``keep_bits`` (``N`` ints, optional) zeroes bits ``>= keep_bits[n]`` of sample ``n`` in the
        returned codes, so the decoder learns to work from any prefix of the bits.
        """
        with torch.autocast(z.device.type, enabled=False):  # bf16 entropy terms are wrong, not just coarse
            return self._quantize(z.float(), keep_bits)

    def token_bits(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``N x num_bits x ...`` -> the token's bits (bool, same shape): signs, then residual bits."""
        if not self.residual_bits:
            return z > 0
        r = self.residual_bits
        beyond = z[:, :r].abs() > self.thresholds.view(1, r, *([1] * (z.ndim - 2))).to(z.dtype)
        return torch.cat([z[:, : self.sign_bits] > 0, beyond], dim=1)

    def _quantize(self, z: torch.Tensor, keep_bits: torch.Tensor | None) -> QuantizerOutput:
        bits = self.token_bits(z)
        codes = straight_through_sign(z)
        if self.residual_bits:  # channel S + c: sign_c * (+-1 by the magnitude), straight-through both
            r = self.residual_bits
            magnitude = straight_through_sign(z[:, :r].abs() - self.thresholds.view(1, r, 1, 1, 1))
            codes = torch.cat([codes[:, : self.sign_bits], codes[:, :r] * magnitude], dim=1)
        if keep_bits is not None:
            codes = codes * keep_mask(self.num_bits, keep_bits.to(z.device))

        z = z[:, : self.sign_bits]  # the sign-bit losses: residual bits have no target of their own
        hard = (z > 0).float() * 2 - 1
        commitment = (z - hard).pow(2).mean()
        p_pos = torch.sigmoid(4.0 * z / self.temperature).movedim(1, -1).reshape(-1, self.sign_bits)
        token_entropy = _binary_entropy(p_pos).sum(-1).mean()
        codebook_entropy = self._codebook_entropy(p_pos)
        entropy_loss = (token_entropy - codebook_entropy) / self.sign_bits
        return QuantizerOutput(codes, bits, entropy_loss, commitment, token_entropy, codebook_entropy, z)

    def _codebook_entropy(self, p_pos: torch.Tensor) -> torch.Tensor:
        total = p_pos.new_zeros(())
        g = self.group_bits
        for start in range(0, self.sign_bits, g):
            p = p_pos[:, start : start + g].clamp(1e-6, 1 - 1e-6)
            book = self.group_codebook[: 2 ** p.shape[1], : p.shape[1]]
            log_probs = torch.log(p) @ book.T + torch.log1p(-p) @ (1 - book).T  # tokens x codes
            mean_probs = log_probs.exp().mean(0)
            total = total - (mean_probs * torch.log2(mean_probs.clamp_min(1e-12))).sum()
        return total
