"""How much would a richer context save? An ideal-code-length probe for the context model (issue 15).

    python benchmarks/probes/entropy_context_probe.py --bits 4 16 [--window 3] [--hidden 64] [--epochs 3]

For each bit of a chunk (in format 2.0's coding order: latent frame, plane, checkerboard pass), a
small float MLP sees every plane of the previous latent frame in a ``window x window`` neighbourhood,
the current latent frame's already-decoded lower planes in a 3 x 3 neighbourhood, the plane's own
already-decoded direct neighbours (second pass), and which plane, pass and latent frame it is. It is
fitted on the training clips' cached tokens (:mod:`lfqcodec.training.token_cache`, every clip except the
held-out ones; ``--sample`` of the bits) and scored on the four held-out clips, against the shipped
integer context model (with its in-chunk gain adaptation). Ideal code lengths only: no coder, no
container, no integer arithmetic; a probe to decide what a next context model should see.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from lfqcodec.model.checkpoint import MODELS_DIR, load_model
from lfqcodec.entropy.coder import _State
from lfqcodec.entropy.store import find_for_tokenizer
from lfqcodec.training.heldout import EXCLUDED, MEASURING
from lfqcodec.training.token_cache import DEFAULT_CACHE

EVALUATED = tuple(MEASURING)


def cached_chunks(model_id: bytes, keep) -> dict[str, list[np.ndarray]]:
    """Chunks (bool ``B x T' x gh x gw``) of the cached 65-frame token files whose clip passes ``keep``."""
    out = {}
    for path in sorted((DEFAULT_CACHE / model_id.hex()).glob("*-65f-g33.npz")):
        stem = path.name.rsplit("-", 3)[0]
        if keep(stem):
            with np.load(path) as data:
                out[stem] = [data[f"c{i}"] for i in range(int(data["count"]))]
    return out


def probe_material():
    """(tokenizer, its installed entropy model, training chunks, held-out chunks by clip) from the
    token cache; exits when the cache lacks them."""
    torch.set_num_threads(2)
    tokenizer = load_model()
    entropy = find_for_tokenizer(tokenizer.model_id, MODELS_DIR)
    held = EXCLUDED
    train = [c for chunks in cached_chunks(tokenizer.model_id, lambda s: s not in held).values() for c in chunks]
    evaluated = cached_chunks(tokenizer.model_id, lambda s: s in EVALUATED)
    if not train or len(evaluated) < len(EVALUATED):
        sys.exit("token cache incomplete: run lfqcodec train-entropy and benchmarks/entropy_bench.py first")
    return tokenizer, entropy, train, evaluated


def features(chunk: np.ndarray, bits: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of every bit of the chunk's first ``bits`` planes, in coding order."""
    _, latent, h, w = chunk.shape
    signs = torch.from_numpy(chunk[:bits].astype(np.float32)) * 2 - 1
    parity = torch.from_numpy(((np.add.outer(np.arange(h), np.arange(w))) % 2).reshape(-1))
    inputs, targets = [], []
    for t in range(latent):
        cur = signs[:, t]
        if t == 0:
            prev = torch.zeros(bits * window * window, h * w)
        else:
            prev = F.unfold(signs[:, t - 1][None], window, padding=window // 2)[0]
        for k in range(bits):
            lower = cur.clone()
            lower[k:] = 0
            lower = F.unfold(lower[None], 3, padding=1)[0]
            plane = torch.zeros(bits, h * w)
            plane[k] = 1
            for phase in (0, 1):
                own = torch.zeros(h * w)
                if phase:
                    own = torch.where(parity == 0, cur[k].reshape(-1), own)
                own = F.unfold(own.reshape(1, 1, h, w), 3, padding=1)[0]
                flags = torch.stack([torch.full((h * w,), float(phase)), torch.full((h * w,), float(t == 0))])
                where = parity == phase
                inputs.append(torch.cat([prev, lower, own, plane, flags])[:, where].T)
                targets.append((cur[k].reshape(-1)[where] > 0).float())
    return torch.cat(inputs), torch.cat(targets)


def dataset(chunks, bits: int, window: int, sample: float, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for chunk in chunks:
        x, y = features(chunk, bits, window)
        if sample < 1:
            keep = torch.rand(len(y), generator=generator) < sample
            x, y = x[keep], y[keep]
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def shipped_bits(chunks, bits: int, entropy) -> float:
    """Ideal code length (bits) of the chunks under the shipped context model."""
    total = 0.0
    for chunk in chunks:
        state = _State(entropy, (bits, chunk.shape[2], chunk.shape[3]))
        for t in range(chunk.shape[1]):
            frame = state.grid.split(chunk[:bits, t].astype(np.uint8))
            for k in range(bits):
                for phase in (0, 1):
                    pairs = state.pairs_for(k, phase).astype(np.float64)
                    q = pairs[:, 1] / pairs.sum(axis=1)
                    y = frame[phase][k]
                    total -= np.log2(np.where(y == 1, q, 1 - q)).sum()
                    state.cur[phase][k] = y
            state.end_frame()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--window", type=int, default=3, help="previous latent frame's neighbourhood")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sample", type=float, nargs="+", default=[1.0, 0.12], help="fraction of training bits, per --bits")
    args = parser.parse_args()
    tokenizer, entropy, train, evaluated = probe_material()
    print(f"# python {' '.join(sys.argv)}  ({time.strftime('%Y-%m-%d')}, tokenizer {tokenizer.model_id.hex()}, "
          f"entropy model {entropy.model_id.hex()}; bytes are ideal code lengths of the clips' first 65 frames)")
    for bits, sample in zip(args.bits, args.sample + args.sample[-1:] * len(args.bits)):
        torch.manual_seed(0)
        x, y = dataset(train, bits, args.window, sample)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], args.hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(args.hidden, args.hidden), torch.nn.ReLU(), torch.nn.Linear(args.hidden, 1))  # fmt: skip
        optimizer = torch.optim.Adam(net.parameters(), 1e-3)
        for _ in range(args.epochs):
            for idx in torch.randperm(len(y)).split(4096):
                loss = F.binary_cross_entropy_with_logits(net(x[idx])[:, 0], y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            for name, chunks in evaluated.items():
                ex, ey = dataset(chunks, bits, args.window, 1.0)
                mlp = F.binary_cross_entropy_with_logits(net(ex)[:, 0], ey, reduction="sum").item() / np.log(2)
                base = shipped_bits(chunks, bits, entropy)
                print(f"{bits:2d} bits {name:13s} shipped {base / 8:8.0f} B ({base / len(ey):.3f} bit/bit)  "
                      f"MLP {mlp / 8:8.0f} B ({mlp / len(ey):.3f})  ratio {mlp / base:.3f}", flush=True)


if __name__ == "__main__":
    main()
