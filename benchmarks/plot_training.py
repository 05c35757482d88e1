"""Plot training and validation curves from a run's logs (``train.jsonl``, ``val.jsonl``).

    python benchmarks/plot_training.py RUN_DIR[@OFFSET] [RUN_DIR[@OFFSET] ...] --out benchmarks/results/training.png

Several run folders (in the order they ran) are drawn on one step axis. A run that was
warm-started from another run's weights counts its steps from 0: give it the step it started from
as ``@OFFSET`` (e.g. ``2026-11-24-refiner@10000``); a dashed line marks where each such run begins.

``--summary`` also prints a Markdown table, one row per run: its validation at ``medium`` (first,
best, last point) and the slope of a straight line fitted through its last ``--tail`` steps, in dB
per 1,000 steps: the numbers behind "the curve has flattened".
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


def validation_summary(name: str, rows: list[dict], tail: int, quality: str = "medium") -> str:
    """One Markdown row: first / best / last validation PSNR of a run and its slope over the last ``tail`` steps."""
    points = sorted((r["step"], r[quality]["psnr"]) for r in rows)
    if not points:
        return f"| {name} | no validation | | | | |"
    best = max(points, key=lambda p: p[1])
    last_step = points[-1][0]
    recent = [p for p in points if p[0] >= last_step - tail]
    slope = "n/a (one point)"
    if len(recent) > 1:
        mean_step = sum(s for s, _ in recent) / len(recent)
        mean_db = sum(d for _, d in recent) / len(recent)
        covariance = sum((s - mean_step) * (d - mean_db) for s, d in recent)
        slope = f"{1000 * covariance / sum((s - mean_step) ** 2 for s, _ in recent):+.2f}"
    return (
        f"| {name} | {points[0][1]:.2f} (step {points[0][0]}) | {best[1]:.2f} (step {best[0]}) | "
        f"{points[-1][1]:.2f} (step {last_step}) | {slope} | {len(recent)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folder, optionally @step offset")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training.png"))
    parser.add_argument("--summary", action="store_true", help="also print each run's validation summary (Markdown)")
    parser.add_argument("--tail", type=int, default=1000, help="steps at the end of each run that its slope is fitted over")
    args = parser.parse_args()
    if args.summary:
        print("| run | first medium dB | best | last | slope, dB per 1k steps (last --tail steps) | points in the fit |")
        print("|---|---|---|---|---|---|")
    train, val, starts = [], [], []
    for spec in args.runs:
        folder, _, offset_text = spec.partition("@")
        offset = int(offset_text or 0)
        if offset:
            starts.append(offset)
        if args.summary:
            print(validation_summary(Path(folder).name, read_jsonl(Path(folder) / "val.jsonl"), args.tail))
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
