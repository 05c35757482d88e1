"""The causal video tokenizer: encoder, LFQ and decoder.

Layout and range: video tensors are ``N x 3 x T x H x W`` RGB in ``[-1, 1]`` with
``T = 1 + temporal_factor * k`` and ``H, W`` multiples of ``config.spatial_factor``. The first frame
is repeated ``temporal_factor - 1`` times into the past, so it forms a latent frame of its own
(a still image is a one-frame video and uses the same vocabulary); each later group of
``temporal_factor`` frames becomes one latent frame that only sees earlier groups.
The token grid is ``N x (1 + k) x H/s x W/s`` of ``num_bits``-bit tokens.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .config import TokenizerConfig
from .layers import (
    CausalConv3d,
    ChannelNorm,
    ResBlock,
    cat,
    depth_to_space,
    depth_to_time,
    space_to_depth,
    time_to_depth,
)
from .quantizer import LookupFreeQuantizer, QuantizerOutput, decoder_codes


def latent_frames(num_frames: int, temporal_factor: int) -> int:
    """Latent frames for ``num_frames`` frames (``1 + ceil((T-1)/f)``)."""
    return 1 + -(-(num_frames - 1) // temporal_factor)


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        stem_in = 3 * cfg.temporal_factor * cfg.patch_size**2
        self.stem = CausalConv3d(stem_in, cfg.channels[0], (1, 3, 3))
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        for level, (width, blocks) in enumerate(zip(cfg.channels, cfg.encoder_blocks)):
            if level > 0:
                self.downs.append(nn.Conv3d(4 * cfg.channels[level - 1], width, 1))
            self.levels.append(nn.Sequential(*[ResBlock(width, cfg.temporal_kernel) for _ in range(blocks)]))
        self.out_norm = ChannelNorm(cfg.channels[-1])
        self.out = CausalConv3d(cfg.channels[-1], cfg.num_bits, (1, 1, 1))

    def forward(self, video: torch.Tensor, first: bool = True) -> torch.Tensor:
        """``first``: ``video`` starts the clip (``1 + f*k`` frames, its first frame is coded alone);
        otherwise it continues a streamed clip with ``f*k`` frames."""
        f = self.cfg.temporal_factor
        if first:
            video = cat([video[:, :, :1]] * (f - 1) + [video], dim=2)  # layers.cat: keeps the layout
        x = space_to_depth(time_to_depth(video, f), self.cfg.patch_size)
        x = self.stem(x)
        for level, blocks in enumerate(self.levels):
            if level > 0:
                x = self.downs[level - 1](space_to_depth(x, 2))
            x = blocks(x)
        z = self.out(F.silu(self.out_norm(x)))
        # RMS-normalise each token (no affine): signs are unchanged, but the commitment and entropy
        # terms see latents of a fixed scale (the role GroupNorm plays before LFQ in MAGVIT-v2).
        return z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-6)


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.inp = CausalConv3d(cfg.num_bits, cfg.channels[-1], (cfg.temporal_kernel, 3, 3))
        self.levels = nn.ModuleList()
        self.ups = nn.ModuleList()
        for level in reversed(range(len(cfg.channels))):
            width = cfg.channels[level]
            self.levels.append(
                nn.Sequential(*[ResBlock(width, cfg.temporal_kernel) for _ in range(cfg.decoder_blocks[level])])
            )
            if level > 0:
                self.ups.append(nn.Conv3d(width, 4 * cfg.channels[level - 1], 1))
        self.out_norm = ChannelNorm(cfg.channels[0])
        stem_out = 3 * cfg.temporal_factor * cfg.patch_size**2
        self.out = CausalConv3d(cfg.channels[0], stem_out, (1, 3, 3))
        self.refine = Refiner(cfg) if cfg.refine_channels else None
        self.residual = ResidualReader(cfg) if cfg.residual_bits else None

    def forward(self, codes: torch.Tensor, first: bool = True) -> torch.Tensor:
        """``first``: ``codes`` start the clip (the first latent frame decodes to one frame)."""
        x = self.inp(codes)
        if self.residual is not None:
            x = self.residual(codes, x)
        coarsest = None
        for i, blocks in enumerate(self.levels):
            x = blocks(x)
            if i == 0:
                coarsest = x
            if i < len(self.ups):
                x = depth_to_space(self.ups[i](x), 2)
        features = F.silu(self.out_norm(x))
        video = depth_to_time(depth_to_space(self.out(features), self.cfg.patch_size), self.cfg.temporal_factor)
        if self.refine is not None:
            video = video + self.refine(features, video, coarsest)
        return video[:, :, self.cfg.temporal_factor - 1 :] if first else video


class ResidualReader(nn.Module):
    """Reads the residual (magnitude) bits into the decoder's coarsest features, for levels that keep them.

    Input: the decoder's codes, all ``num_bits`` channels (signs, and ``sign * magnitude`` in the residual
    channels); output: ``features + gate * correction``, where ``gate`` is 1 for each sample whose residual
    channels are present (non-zero) and 0 otherwise. A level without residual bits therefore never runs
    it and decodes exactly as the sign-only decoder it was grown from; the last convolution starts at
    zero, so the grown decoder also reproduces it at the residual levels until trained.
    """

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        width = cfg.channels[-1]
        self.sign_bits = cfg.sign_bits
        self.inp = CausalConv3d(cfg.num_bits, width, (cfg.temporal_kernel, 3, 3))
        self.blocks = nn.Sequential(*[ResBlock(width, cfg.temporal_kernel) for _ in range(cfg.residual_blocks)])
        self.out_norm = ChannelNorm(width)
        self.out = nn.Conv3d(width, width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, codes: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        gate = codes[:, self.sign_bits :].detach().abs().flatten(1).amax(1) > 0  # per sample
        if not bool(gate.any()):
            return features
        correction = self.out(F.silu(self.out_norm(self.blocks(self.inp(codes)))))
        if bool(gate.all()):
            return features + correction
        return features + correction * gate.to(correction.dtype).view(-1, *([1] * (correction.ndim - 1)))


class Refiner(nn.Module):
    """Per-frame residual refinement of the decoder's coarse output.

    The coarse output is a linear function of one feature vector per ``f x p x p`` block, which shows
    as blocking and blur. The refiner splits the features into ``f`` frames, runs causal residual
    stages at rising resolution (``1/p``, ``2/p``, ...), sees the coarse frames at its last stage, and
    adds a correction; its last convolution starts at zero, so a decoder trained without a refiner
    keeps its output when one is added and trained on top.

    Per-frame capacity (where motion is drawn): ``refine_blocks`` residual blocks per stage (blocks
    after a stage's first start as identity), and with ``frame_split`` a zero-initialised projection
    of the decoder's coarsest features (``1/(p 2^(L-1))`` resolution, the widest level) into
    ``f`` frames of stage-0 features, so each frame gets its own features from the richest level
    instead of a linear share of the ``1/p`` vector. Both start as no-ops: a refiner grown this way
    reproduces the smaller one's output until trained.
    """

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.refine_channels
        self.split = nn.Conv3d(cfg.channels[0], cfg.temporal_factor * widths[0], 1)
        self.stages = nn.ModuleList([ResBlock(w, cfg.temporal_kernel) for w in widths])
        self.extra = nn.ModuleList(
            [nn.Sequential(*[ResBlock(w, cfg.temporal_kernel) for _ in range(n - 1)]) for w, n in zip(widths, cfg.refine_blocks)]
        )
        self.frame_up = 2 ** (len(cfg.channels) - 1)
        self.frame_in = None
        if cfg.frame_split:
            self.frame_in = nn.Conv3d(cfg.channels[-1], cfg.temporal_factor * widths[0] * self.frame_up**2, 1)
            nn.init.zeros_(self.frame_in.weight)
            nn.init.zeros_(self.frame_in.bias)
        self.ups = nn.ModuleList([nn.Conv3d(a, 4 * b, 1) for a, b in itertools.pairwise(widths)])
        self.out_patch = cfg.patch_size // 2 ** (len(widths) - 1)
        self.coarse_in = nn.Conv3d(3 * self.out_patch**2, widths[-1], 1)
        self.out_norm = ChannelNorm(widths[-1])
        self.out = CausalConv3d(widths[-1], 3 * self.out_patch**2, (1, 3, 3))
        nn.init.zeros_(self.out.conv.weight)
        nn.init.zeros_(self.out.conv.bias)

    def forward(self, features: torch.Tensor, coarse: torch.Tensor, coarsest: torch.Tensor | None = None) -> torch.Tensor:
        x = self.split(features)
        if self.frame_in is not None:
            x = x + depth_to_space(self.frame_in(coarsest), self.frame_up)
        x = depth_to_time(x, self.cfg.temporal_factor)
        if self.out.streaming and not torch.is_grad_enabled():
            # streamed inference: one frame at a time (the causal convolutions carry the past), so
            # the 1/2-resolution activations exist for one frame, not for the whole window
            return torch.cat([self._frames(x[:, :, t : t + 1], coarse[:, :, t : t + 1]) for t in range(x.shape[2])], 2)
        return self._frames(x, coarse)

    def _frames(self, x: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        for i, stage in enumerate(self.stages):
            if i == len(self.stages) - 1:
                x = x + self.coarse_in(space_to_depth(coarse, self.out_patch))
            x = self.extra[i](stage(x))
            if i < len(self.ups):
                x = depth_to_space(self.ups[i](x), 2)
        return depth_to_space(self.out(F.silu(self.out_norm(x))), self.out_patch)


class TokenizerNet(nn.Module):
    """Encoder + LFQ + decoder. ``forward`` is the training path; ``encode``/``decode`` the codec's."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = LookupFreeQuantizer(cfg.num_bits, residual_bits=cfg.residual_bits)
        self.decoder = Decoder(cfg)

    def forward(
        self, video: torch.Tensor, keep_bits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, QuantizerOutput]:
        """Reconstruct ``video``; returns ``(reconstruction, quantizer output)``."""
        q = self.quantizer(self.encoder(video), keep_bits)
        return self.decoder(q.codes.to(video.dtype)), q

    @torch.no_grad()
    def encode(self, video: torch.Tensor, first: bool = True) -> torch.Tensor:
        """``N x 3 x T x H x W`` in [-1, 1] -> bool bits ``N x B x T' x H/s x W/s``.

        ``first=False`` continues a clip inside :func:`~lfqcodec.model.layers.streaming`."""
        dtype = next(self.encoder.parameters()).dtype
        return self.quantizer.token_bits(self.encoder(video.to(dtype), first))

    @torch.no_grad()
    def decode(self, bits: torch.Tensor, first: bool = True) -> torch.Tensor:
        """Bool bits ``N x b x T' x h x w`` (``b <= B``: missing high bits are treated as unknown)
        -> video ``N x 3 x (1 + f*(T'-1)) x H x W`` in [-1, 1] (not clamped); with ``first=False``
        (streaming) ``f*T'`` frames."""
        codes = decoder_codes(bits, self.cfg.num_bits, self.cfg.residual_bits, dim=1)
        dtype = next(self.decoder.parameters()).dtype
        return self.decoder(codes.to(dtype), first)
