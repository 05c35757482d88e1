"""Would adapting the fitted context model inside a chunk pay? An ideal-code-length probe.

    python benchmarks/probes/entropy_adaptive_probe.py [--bits 4 16] [--weight 16 64] [CLIP ...]

For each held-out clip's cached tokens (:mod:`lfqcodec.training.token_cache`, the shipped tokenizer), the
shipped entropy model's probabilities are refined by secondary estimation: per bit plane, first or
later latent frame, and bucket of the model's own logit (33 buckets), counts of this chunk's symbols
so far pull the probability towards what was seen, ``(ones + weight * p) / (n + weight)``. Prints the
ideal code length in bytes (no coder, no container) before and after. Floating point: a probe to
decide whether an integer version is worth specifying in the format, not a coder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lfqcodec.model.checkpoint import MODELS_DIR, load_model
from lfqcodec.entropy.coder import GAINS, Z_MAX, _State
from lfqcodec.entropy.store import find_for_tokenizer
from lfqcodec.training.heldout import measuring_clips
from lfqcodec.training.token_cache import clip_tokens

BUCKETS = 33


def code_lengths(chunk: np.ndarray, model, weight: float) -> tuple[float, float]:
    """Ideal bits of one chunk (bool ``b x T' x h x w``) under the model, and with secondary estimation."""
    b, latent, h, w = chunk.shape
    state = _State(model, (b, h, w))
    ones, seen = np.zeros((b, 2, BUCKETS)), np.zeros((b, 2, BUCKETS))
    plain = refined = 0.0
    for t in range(latent):
        frame = state.grid.split(chunk[:, t].astype(np.uint8))
        for k in range(b):
            for phase in (0, 1):
                pairs = state.pairs_for(k, phase).astype(np.float64)
                p = pairs[:, 1] / pairs.sum(axis=1)
                z = np.clip((state.last[-1] * GAINS[state.choice[k] % GAINS.size]) >> 4, -Z_MAX, Z_MAX)
                bucket = (z + Z_MAX) * (BUCKETS - 1) // (2 * Z_MAX)
                y = frame[phase][k]
                later = int(t > 0)
                q = np.clip((ones[k, later, bucket] + weight * p) / (seen[k, later, bucket] + weight), 1e-4, 1 - 1e-4)
                plain -= np.log2(np.where(y == 1, p, 1 - p)).sum()
                refined -= np.log2(np.where(y == 1, q, 1 - q)).sum()
                np.add.at(ones[k, later], bucket, y)
                np.add.at(seen[k, later], bucket, 1)
                state.cur[phase][k] = y
        state.end_frame()
    return plain, refined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="*", type=Path, default=measuring_clips())
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--weight", type=float, nargs="+", default=[16, 64])
    args = parser.parse_args()
    tokenizer = load_model()
    model = find_for_tokenizer(tokenizer.model_id, MODELS_DIR)
    for weight in args.weight:
        for clip in args.clips:
            tokens = clip_tokens(clip, tokenizer)
            for bits in args.bits:
                plain, refined = np.sum([code_lengths(c[:bits], model, weight) for c in tokens.chunks], axis=0)
                print(f"weight {weight:g} {clip.name} {bits} bits: {plain / 8:.0f} -> {refined / 8:.0f} bytes "
                      f"({refined / plain:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
