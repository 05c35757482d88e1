"""Plot training and validation curves from a run's logs (``train.jsonl``, ``val.jsonl``).

    python benchmarks/plot_training.py RUN_DIR[@OFFSET] [RUN_DIR[@OFFSET] ...] --out benchmarks/results/training.png

Several run folders (one per session, in order) are drawn on one step axis. A run that was
warm-started from another run's weights counts its steps from 0: give it the step it started from
as ``@OFFSET`` (e.g. ``session2@10000``); a dashed line marks where each such run begins.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folder, optionally @step offset")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training.png"))
    args = parser.parse_args()
    train, val, starts = [], [], []
    for spec in args.runs:
        folder, _, offset_text = spec.partition("@")
        offset = int(offset_text or 0)
        if offset:
            starts.append(offset)
        for rows, name in ((train, "train.jsonl"), (val, "val.jsonl")):
            # a resumed run logs again the steps after its last checkpoint: keep the latest of each
            latest = {r["step"]: r for r in read_jsonl(Path(folder) / name)}
            rows.extend({**r, "step": step + offset} for step, r in latest.items())
    train.sort(key=lambda r: r["step"])
    val.sort(key=lambda r: r["step"])
    fig, (ax_train, ax_val, ax_bits) = plt.subplots(1, 3, figsize=(16, 4.5))
    ax_train.plot([r["step"] for r in train], [r["psnr"] for r in train], lw=0.8, label="train batch PSNR (all qualities)")
    ax_train.set_xlabel("step")
    ax_train.set_ylabel("dB")
    ax_train.legend()
    for quality in ("low", "medium", "high"):
        ax_val.plot([r["step"] for r in val], [r[quality]["psnr"] for r in val], marker="o", label=f"val PSNR {quality}")
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("dB (held-out clips, EMA weights)")
    ax_val.legend()
    ax_bits.plot([r["step"] for r in train], [r["token_entropy"] for r in train], label="per-token entropy (bits)")
    ax_bits.plot([r["step"] for r in train], [r["codebook_entropy"] for r in train], label="codebook entropy (bits)")
    ax_bits.set_xlabel("step")
    ax_bits.legend()
    for ax in (ax_train, ax_val, ax_bits):
        ax.grid(alpha=0.3)
        for start in starts:
            ax.axvline(start, color="grey", ls="--", lw=0.8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)


if __name__ == "__main__":
    main()
