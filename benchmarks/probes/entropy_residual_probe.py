"""Would a small network on top of the shipped context model pay? An ideal-code-length probe (issue 15).

    python benchmarks/probes/entropy_residual_probe.py [--hidden 32] [--epochs 2] [--sample 0.05]

For each bit in format 2.0's coding order, a one-hidden-layer float network sees the previous latent
frame's known planes in 3 x 3, the current latent frame's decoded lower planes in 3 x 3, the plane's
own decoded neighbours (second pass), the plane, the pass, and the shipped model's logit ``z0``; it
outputs a correction added to ``z0``. Both are then scored with the shipped in-chunk gain adaptation
(float, ideal code lengths) on the held-out clips at 4, 16 and 32 bits. Trained on the training clips'
cached tokens with a random quality per chunk (unknown planes are 0).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from lfqcodec.entropy.coder import GAINS, _State

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from entropy_context_probe import probe_material


def chunk_features(chunk: np.ndarray, bits: int, entropy, model_bits: int = 32):
    """Yields (features float32 n x F, targets n, z0 n, plane, frame) per plane and pass, in coding order."""
    _, latent, h, w = chunk.shape
    state = _State(entropy, (bits, h, w))
    signs = torch.from_numpy(chunk[:bits].astype(np.float32)) * 2 - 1
    full = torch.zeros(model_bits, latent, h, w)
    full[:bits] = signs
    parity = torch.from_numpy(((np.add.outer(np.arange(h), np.arange(w))) % 2).reshape(-1))
    for t in range(latent):
        cur = full[:, t]
        prev = torch.zeros(9 * model_bits, h * w) if t == 0 else F.unfold(full[:, t - 1][None], 3, padding=1)[0]
        cur_unf = F.unfold(cur[None], 3, padding=1)[0].reshape(model_bits, 9, h * w)
        frame = state.grid.split(chunk[:bits, t].astype(np.uint8))
        for k in range(bits):
            lower = cur_unf.clone()
            lower[k:] = 0
            lower = lower.reshape(-1, h * w)
            onehot = torch.zeros(model_bits, h * w)
            onehot[k] = 1
            for phase in (0, 1):
                state.pairs_for(k, phase)
                z0 = torch.from_numpy(state.last[-1].astype(np.float32))
                state.cur[phase][k] = frame[phase][k]
                own = torch.zeros(h * w)
                if phase:
                    own = torch.where(parity == 0, cur[k].reshape(-1), own)
                own = F.unfold(own.reshape(1, 1, h, w), 3, padding=1)[0]
                where = parity == phase
                flags = torch.stack([torch.full((h * w,), float(phase)), torch.full((h * w,), float(t == 0))])
                x = torch.cat([prev, lower, own, onehot, flags])[:, where].T
                yield torch.cat([x, (z0 / 256)[:, None]], 1), torch.from_numpy(frame[phase][k].astype(np.float32)), z0, k, t
        state.end_frame()


def scored(chunk, bits, entropy, net):
    """(new logits, targets, z0, plane, frame) of every bit, features dropped as they are used."""
    out = [[], [], [], [], []]
    for x, y, z0, k, t in chunk_features(chunk, bits, entropy):
        for i, v in enumerate((net(x), y, z0, torch.full((len(y),), k), torch.full((len(y),), t))):
            out[i].append(v)
    return [torch.cat(v) for v in out]


def adapted_bits(z_nats: torch.Tensor, y: torch.Tensor, k: torch.Tensor, t: torch.Tensor, bits: int) -> float:
    """Ideal code length (bits) with the shipped per-plane gain adaptation, in float."""
    gains = torch.from_numpy(GAINS.astype(np.float32)) / 16
    spent = torch.zeros(bits, len(gains))
    total = 0.0
    for frame in range(int(t.max()) + 1):
        sel = t == frame
        zf, yf, kf = z_nats[sel], y[sel], k[sel]
        choice = gains[spent.argmin(1)] if frame >= 2 else torch.ones(bits)
        zg = (zf * choice[kf]).clamp(-16, 16)
        total += F.binary_cross_entropy_with_logits(zg, yf, reduction="sum").item() / np.log(2)
        if frame >= 1:
            all_g = (zf[None] * gains[:, None]).clamp(-16, 16)
            cost = F.binary_cross_entropy_with_logits(all_g, yf[None].expand_as(all_g), reduction="none")
            spent += torch.zeros(bits, len(gains)).index_add_(0, kf, cost.T)
    return total


class Residual(torch.nn.Module):
    def __init__(self, inputs: int, hidden: int):
        super().__init__()
        self.hidden = torch.nn.Linear(inputs, hidden)
        self.out = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)

    def forward(self, x):
        return x[:, -1] + self.out(F.relu(self.hidden(x)))[:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--sample", type=float, default=0.05)
    parser.add_argument("--eval-bits", type=int, nargs="+", default=[4, 16, 32])
    args = parser.parse_args()
    _, entropy, train, evaluated = probe_material()
    entropy = entropy.base()
    rng = np.random.default_rng(0)
    started = time.time()
    xs, ys = [], []
    for i, chunk in enumerate(train):
        bits = int(rng.choice([4, 16, 32]))
        for x, y, *_ in chunk_features(chunk, bits, entropy):
            keep = torch.from_numpy(rng.random(len(y)) < args.sample * 32 / bits)
            xs.append(x[keep])
            ys.append(y[keep])
    x, y = torch.cat(xs), torch.cat(ys)
    print(f"# {len(y)} training bits from {len(train)} chunks in {time.time() - started:.0f} s", flush=True)
    torch.manual_seed(0)
    net = Residual(x.shape[1], args.hidden)
    optimizer = torch.optim.Adam(net.parameters(), 2e-3)
    for epoch in range(args.epochs):
        total = 0.0
        for idx in torch.randperm(len(y)).split(4096):
            loss = F.binary_cross_entropy_with_logits(net(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        print(f"# epoch {epoch}: {total / len(y) / np.log(2):.4f} bit/bit ({time.time() - started:.0f} s)", flush=True)
    with torch.no_grad():
        for bits in args.eval_bits:
            for name, chunks in evaluated.items():
                base = new = count = 0.0
                for chunk in chunks:
                    logits, ey, ez, ek, et = scored(chunk, bits, entropy, net)
                    base += adapted_bits(ez / 256, ey, ek, et, bits)
                    new += adapted_bits(logits, ey, ek, et, bits)
                    count += len(ey)
                print(f"{bits:2d} bits {name:13s} shipped {base / 8:8.0f} B ({base / count:.3f} bit/bit)  "
                      f"residual {new / 8:8.0f} B ({new / count:.3f})  ratio {new / base:.3f}", flush=True)


if __name__ == "__main__":
    main()
