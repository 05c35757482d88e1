"""Where a context-coded chunk's bytes go: its first latent frame (coded as an image: no previous
latent frame) against the rest (issue 15, the low-quality target).

    python benchmarks/probes/entropy_frame_probe.py --bits 4 16 32

For each held-out clip's cached chunks (65 frames, chunks of 33: 9 latent frames each) the shipped
entropy model codes the first ``t`` latent frames for ``t = 1, 2, ...``; the growth of the payload
gives each latent frame's bytes. Prints bits per token bit for the first latent frame and for the
rest, and the first frame's share of the chunk's bytes.
"""

from __future__ import annotations

import argparse

import numpy as np
from entropy_context_probe import probe_material

from lfqcodec.entropy.coder import encode_bits


def frame_bytes(chunk: np.ndarray, model) -> list[int]:
    """Bytes each latent frame adds to the chunk's payload, in order."""
    sizes = [len(encode_bits(np.ascontiguousarray(chunk[:, :t]), model)) for t in range(1, chunk.shape[1] + 1)]
    return [b - a for a, b in zip([0] + sizes[:-1], sizes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 16, 32])
    args = parser.parse_args()
    _, entropy, _, evaluated = probe_material()
    print(f"# python benchmarks/probes/entropy_frame_probe.py --bits {' '.join(map(str, args.bits))} "
          f"(entropy model {entropy.model_id.hex()})")  # fmt: skip
    for bits in args.bits:
        for clip, chunks in evaluated.items():
            per = [frame_bytes(chunk[:bits], entropy) for chunk in chunks]
            first, rest = sum(p[0] for p in per), sum(sum(p[1:]) for p in per)
            first_bits = sum(c[:bits, :1].size for c in chunks)
            rest_bits = sum(c[:bits, 1:].size for c in chunks)
            print(f"{bits:2d} bits {clip:13s} first latent frame {8 * first / first_bits:.3f} bit/bit, "
                  f"rest {8 * rest / rest_bits:.3f} bit/bit, first frame's share of the bytes "
                  f"{first / (first + rest):.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
