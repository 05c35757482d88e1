"""Would a temporal-history context help the 4-bit (low) codes? (issue 15, the low-quality target)

    python benchmarks/probes/entropy_history_probe.py --bits 4

For every bit of the held-out clips' cached chunks from the third latent frame on, the shipped
entropy model's logit is bucketed (33 bins) and counts are fitted on the training tokens for:

- ``logit``: the bucket alone (the model recalibrated: the baseline the others are compared with),
- ``changed``: the bucket and whether this bit changed between the two previous latent frames,
- ``around``: the bucket and how many tokens of the 3 x 3 around it changed there (0, 1, 2, 3+),
- ``both``: the bucket and both.

Prints the held-out clips' code lengths in bits per bit under each (counts fitted on the training
tokens only; ``shipped`` is the entropy model itself).
"""

from __future__ import annotations

import argparse

import numpy as np
from entropy_context_probe import probe_material

from lfqcodec.entropy.coder import Z_MAX, coded_logits

EDGES = np.linspace(-Z_MAX, Z_MAX, 33)
BUCKETS = len(EDGES) + 1
FEATURES = {"logit": lambda f: 0, "changed": lambda f: f["changed"], "around": lambda f: f["around"],
            "both": lambda f: f["changed"] * 4 + f["around"]}  # fmt: skip


def _box(a: np.ndarray) -> np.ndarray:
    """3 x 3 sums over the last two axes (zero outside)."""
    padded = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)])
    h, w = a.shape[-2:]
    return sum(padded[..., dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))


def chunk_features(chunk: np.ndarray, bits: int, model) -> dict[str, np.ndarray]:
    """Flat arrays over the chunk's bits from the third latent frame on."""
    planes = np.ascontiguousarray(chunk[:bits])
    logit = coded_logits(planes, model)
    y = planes.astype(np.int64)
    changed = np.zeros_like(y)
    changed[:, 2:] = y[:, 1:-1] ^ y[:, :-2]
    around = np.minimum(_box(changed.max(0)), 3)[None].repeat(bits, 0)
    plane = np.broadcast_to(np.arange(bits)[:, None, None, None], y.shape)
    out = {"logit": logit, "bucket": np.digitize(logit, EDGES), "y": y, "changed": changed, "around": around,
           "plane": plane}  # fmt: skip
    return {k: v[:, 2:].reshape(-1) for k, v in out.items()}


def gather(chunks: list[np.ndarray], bits: int, model) -> dict[str, np.ndarray]:
    parts = [chunk_features(c, bits, model) for c in chunks]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def context(f: dict[str, np.ndarray], name: str) -> np.ndarray:
    return (f["plane"] * BUCKETS + f["bucket"]) * 16 + FEATURES[name](f)


def code_length(f: dict[str, np.ndarray], ctx: np.ndarray, p_one: np.ndarray) -> float:
    q = np.clip(p_one[ctx], 1e-4, 1 - 1e-4)
    return float(-(f["y"] * np.log2(q) + (1 - f["y"]) * np.log2(1 - q)).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, default=4)
    args = parser.parse_args()
    _, model, train, evaluated = probe_material()
    fitted = gather(train, args.bits, model)
    cost = model.cost.astype(np.float64) / 256
    print(f"# python benchmarks/probes/entropy_history_probe.py --bits {args.bits} (entropy model {model.model_id.hex()}; "
          "bits per bit from the third latent frame on; counts fitted on the training tokens)")  # fmt: skip
    tables = {}
    for name in FEATURES:
        ctx, size = context(fitted, name), args.bits * BUCKETS * 16
        ones = np.bincount(ctx, weights=fitted["y"], minlength=size) + 0.4
        zeros = np.bincount(ctx, weights=1 - fitted["y"], minlength=size) + 0.4
        tables[name] = ones / (ones + zeros)
    for clip, chunks in evaluated.items():
        f = gather(chunks, args.bits, model)
        n = len(f["y"])
        shipped = cost[f["logit"] + Z_MAX, f["y"]].sum() / n
        lengths = {name: code_length(f, context(f, name), tables[name]) / n for name in FEATURES}
        print(f"{clip:13s} shipped {shipped:.3f} " + " ".join(f"{k} {v:.3f}" for k, v in lengths.items())
              + f"  (both / logit {lengths['both'] / lengths['logit']:.3f})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
