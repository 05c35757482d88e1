"""Fit coder 2's residual network (:mod:`lfqcodec.entropy.net`) on token bits, on top of fitted tables.

The network is trained in float (PyTorch, Adam) on a sample of the bits of the training chunks, each
chunk seen at a random one of the qualities' bit counts (unknown planes are zero inputs, as when
coding a file of fewer bits), with the tables' own logit as an input and as the starting point.
Its weights are then scaled by powers of two and rounded to the integers of the file format, within
the bounds that keep coding exact (``ResidualNet.problems``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from .coder import FittedModel, _State
from .net import EXACT, HIDDEN_MAX, NEIGHBOURS, OFFSETS, Z_INPUT, ResidualNet

log = logging.getLogger(__name__)

HIDDEN_SCALE_BITS = 6  # the hidden layer's integers are 1/64 of the float activations


def unfold_signs(planes: np.ndarray) -> np.ndarray:
    """Signs of bool ``n x h x w`` planes in the 3 x 3 around each position, zero outside the grid:
    float32 ``n x 9 x h*w`` (``OFFSETS`` order)."""
    n, h, w = planes.shape
    padded = np.zeros((n, h + 2, w + 2), dtype=np.float32)
    padded[:, 1:-1, 1:-1] = planes
    padded[:, 1:-1, 1:-1] *= 2
    padded[:, 1:-1, 1:-1] -= 1
    out = np.empty((n, 9, h * w), dtype=np.float32)
    for d, (dy, dx) in enumerate(OFFSETS):
        out[:, d] = padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w].reshape(n, h * w)
    return out


def chunk_samples(chunk: np.ndarray, bits: int, tables: FittedModel, rate: float, rng: np.random.Generator):
    """A sample of one chunk's bits at ``bits`` bits per token: ``(signs int8 n x (18 B + 4), z0 int32
    n, bias index int64 n (plane, pass, first frame), targets uint8 n)``, ``B`` = the model's planes."""
    model_bits, latent, h, w = chunk.shape
    state = _State(tables.base(), (bits, h, w))
    known = np.zeros((model_bits, h, w), dtype=bool)
    out = [[], [], [], []]
    for t in range(latent):
        prev = np.zeros((model_bits, 9, h * w), dtype=np.int8)
        if t:
            prev[:bits] = unfold_signs(chunk[:bits, t - 1])
        known[:bits] = chunk[:bits, t]
        cur = unfold_signs(known[:bits]).astype(np.int8)
        frame = state.grid.split(chunk[:bits, t].astype(np.uint8))
        for k in range(bits):
            for phase, idx in enumerate(state.grid.positions):
                state.pairs_for(k, phase)
                z0 = state.last[-1]
                take = np.flatnonzero(rng.random(idx.size) < rate)
                pos = idx[take]
                lower = np.zeros((take.size, model_bits, 9), dtype=np.int8)
                lower[:, :k] = cur[:k, :, pos].transpose(2, 0, 1)
                own = np.zeros((take.size, 4), dtype=np.int8)
                if phase:
                    y0, x0 = np.divmod(pos, w)
                    for i, (dy, dx) in enumerate(NEIGHBOURS):
                        y, x = y0 + dy, x0 + dx
                        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
                        own[inside, i] = chunk[k, t, y[inside], x[inside]] * 2 - 1
                signs = np.concatenate([prev[:, :, pos].transpose(2, 0, 1).reshape(take.size, -1),
                                        lower.reshape(take.size, -1), own], axis=1)  # fmt: skip
                out[0].append(signs)
                out[1].append(z0[take])
                out[2].append(np.full(take.size, (k * 2 + phase) * 2 + int(t == 0)))
                out[3].append(frame[phase][k][take])
                state.cur[phase][k] = frame[phase][k]
        state.end_frame()
    return tuple(np.concatenate(v) for v in out)


class FloatNet(torch.nn.Module):
    """The float twin of :class:`ResidualNet` that is trained."""

    def __init__(self, bits: int, hidden: int):
        super().__init__()
        self.bits = bits
        self.signs = torch.nn.Linear(18 * bits + 4, hidden, bias=False)
        self.logit = torch.nn.Parameter(torch.zeros(hidden))
        self.bias = torch.nn.Parameter(torch.zeros(bits * 4, hidden))
        self.out = torch.nn.Parameter(torch.zeros(bits, hidden))
        self.out_bias = torch.nn.Parameter(torch.zeros(bits))
        torch.nn.init.normal_(self.signs.weight, std=0.05)

    def forward(self, signs, z0, index):
        """Logits in nats."""
        zc = z0.clamp(-Z_INPUT, Z_INPUT) / 256
        a = self.signs(signs) + self.logit * zc[:, None] + self.bias[index]
        h = a.clamp(0, HIDDEN_MAX / 2**HIDDEN_SCALE_BITS)
        plane = index // 4
        return z0 / 256 + (self.out[plane] * h).sum(1) + self.out_bias[plane]


def train_float(samples, bits: int, hidden: int, epochs: int, seed: int = 0, batch: int = 4096) -> FloatNet:
    signs, z0, index, y = (torch.from_numpy(a) for a in samples)
    z0, y = z0.float(), y.float()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = FloatNet(bits, hidden)
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    batches = math.ceil(len(y) / batch) * epochs
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=batches, pct_start=0.1)
    rows = torch.empty(batch, signs.shape[1], dtype=signs.dtype)  # batches are gathered into reused buffers:
    inputs = torch.empty(batch, signs.shape[1])  # fresh allocations of this size cost more than the arithmetic
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(y), generator=generator).split(batch):
            n = len(idx)
            torch.index_select(signs, 0, idx, out=rows[:n])
            inputs[:n].copy_(rows[:n])
            logits = net(inputs[:n], z0[idx], index[idx])
            loss = F.binary_cross_entropy_with_logits(logits, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * n
        log.info("residual network epoch %d: %.4f bit/bit on %d bits", epoch, total / len(y) / math.log(2), len(y))
    return net


def quantise(net: FloatNet) -> ResidualNet:
    """Powers-of-two scales and rounding into the file's integers (FORMAT.md, "Coder 2")."""
    with torch.no_grad():
        w = net.signs.weight.double().numpy()
        u, bias = net.logit.double().numpy(), net.bias.double().numpy()
        v, c = net.out.double().numpy(), net.out_bias.double().numpy()
    bits, hidden = v.shape
    l1 = np.abs(w).sum(1) + Z_INPUT / 256 * np.abs(u) + np.abs(bias).max(0)
    qa = int(np.floor(np.log2((EXACT - 4096) / 2 / max(l1.max(), 1e-9))))
    qa = min(qa, int(np.floor(np.log2(32000 / max(np.abs(w).max(), 1e-9)))), 24)
    qv = int(np.floor(np.log2(32000 / max(np.abs(v).max(), 1e-9))))
    qv = min(qv, int(np.floor(np.log2((EXACT / 2) / (HIDDEN_MAX * max(np.abs(v).sum(1).max(), 1e-9))))), 20)
    qh = max(HIDDEN_SCALE_BITS, 8 - qv)
    if qa < qh:
        raise ValueError("residual network weights too large to quantise")
    prev, cur, own = w[:, : 9 * bits], w[:, 9 * bits : 18 * bits], w[:, 18 * bits :]
    as_int = lambda x, q, dtype: np.round(x * 2.0**q).astype(dtype)
    result = ResidualNet(
        w_prev=as_int(prev, qa, np.int16).reshape(hidden, bits, 9), w_cur=as_int(cur, qa, np.int16).reshape(hidden, bits, 9),
        w_own=as_int(own, qa, np.int16), w_logit=as_int(u, qa - 8, np.int32),
        bias=as_int(bias, qa, np.int32).reshape(bits, 2, 2, hidden), out=as_int(v, qv, np.int16),
        out_bias=as_int(c, qv + qh, np.int32), shifts=np.array([qa - qh, qv + qh - 8], dtype=np.int32))  # fmt: skip
    problem = result.problems()
    if problem:
        raise ValueError(f"quantised residual network is invalid: {problem}")
    return result


def fit_net(chunks: Iterable[np.ndarray], tables: FittedModel, hidden: int = 8, epochs: int = 30,
            samples_per_chunk: int = 120_000, qualities: tuple[int, ...] = (4, 16, 32), seed: int = 0) -> FittedModel:  # fmt: skip
    """``tables`` with a residual network fitted on ``chunks`` (bool ``B x T' x gh x gw`` each)."""
    rng = np.random.default_rng(seed)
    parts = []
    for chunk in chunks:
        bits = int(rng.choice([q for q in qualities if q <= tables.bits] or [tables.bits]))
        rate = min(1.0, samples_per_chunk / (bits * chunk[0].size))
        parts.append(chunk_samples(chunk, bits, tables, rate, rng))
    if not parts:
        raise ValueError("no tokens to fit the residual network on")
    samples = tuple(np.concatenate([p[i] for p in parts]) for i in range(4))
    net = train_float(samples, tables.bits, hidden, epochs, seed)
    return FittedModel(tables.table, tables.weights, tables.sigmoid, tables.tokenizer_id, tables.name, tables.cost,
                       quantise(net))  # fmt: skip
