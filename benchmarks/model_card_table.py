"""Merge per-clip ``lfqcodec bench`` JSON files and write the model card's tables and the short one of docs/RESULTS.md.

    python benchmarks/model_card_table.py benchmarks/results/model-card/clips/*.json --out benchmarks/results/model-card
        [--card models/lfq-base.md] [--results docs/RESULTS.md] [--note CLIP=TEXT ...]

Run by ``benchmarks/model_card.sh`` after its benches; re-running it alone rewrites everything below
from the committed JSON. Writes ``OUT/bench.json`` (all clips: numbers, machine, dates, commands),
``OUT/bench.txt`` (the table ``lfqcodec bench`` prints) and ``OUT/rd.png`` (RD curves), then the
tables. Each file holds its table between the lines ``<!-- results table (kind): begin ...``
and ``<!-- results table: end -->``; ``kind`` is ``full`` (every quality, x265 beside each, BD-rates:
the model card), ``short`` (medium only: docs/RESULTS.md) or ``stats`` (weights hash, parameters and FLOPs
per pixel, from ``model_stats.json`` beside the bench JSON). Everything else in the files is left as is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# What each clip is to the shipped weights (lfq-base of 2026-11-24); change with the training data.
NOTES = {
    "bikes.mp4": "selection clip",  # held out, but chose every model so far through validation
    "carphone_pristine.mp4": "selection clip",
    "vtest.avi": "seen by v5, v6's starting point",
}
ORDER = ["armwrestling.mp4", "kitten.mp4", "aquarium.mp4", "city.mpg", "vtest.avi", "bikes.mp4", "carphone_pristine.mp4"]
MARKER = re.compile(r"(<!-- results table \((full|short|stats)\): begin[^\n]*-->\n)(.*?)(<!-- results table: end -->)", re.S)


def _nearest_x265(points: list[dict], ours: dict) -> dict | None:
    x265 = [p for p in points if p["clip"] == ours["clip"] and p["codec"] == "x265"]
    return min(x265, key=lambda p: abs(math.log(p["bpp"] / ours["bpp"]))) if x265 else None


def _cells(p: dict | None) -> list[str]:
    if p is None:
        return ["-"] * 4
    return [f"{p['bpp']:.4f}", f"{p['psnr_rgb']:.2f}", f"{p['ms_ssim_y']:.3f}", f"{p['vmaf']:.1f}"]


def _bd(result: dict) -> str:
    if result.get("bd_rate_percent") is None:
        return "no overlap"
    low, high = result["overlap"]
    return f"{result['bd_rate_percent']:+.0f} % ({low:.3g}-{high:.3g})"


def _clip_label(record: dict, clip: str, notes: dict[str, str]) -> str:
    p = next(p for p in record["points"] if p["clip"] == clip)
    note = notes.get(clip, "held out")
    return f"{Path(clip).stem.removesuffix('_pristine')} {p['width']}x{p['height']} ({note})"


def table(record: dict, kind: str, notes: dict[str, str], base: Path) -> str:
    """The Markdown block for ``kind`` (``full`` or ``short``); links relative to ``base``'s folder."""
    points = [p for p in record["points"] if p["device"] == "cpu"]
    clips = list(dict.fromkeys(p["clip"] for p in points))
    qualities = ("low", "medium", "high") if kind == "full" else ("medium",)
    head = ["clip", "lfqcodec", "bpp", "PSNR (dB)", "MS-SSIM", "VMAF", "x265 at about that rate", "bpp", "PSNR (dB)",
            "MS-SSIM", "VMAF"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * 4 + "---|" + "---:|" * 4]
    for clip in clips:
        for quality in qualities:
            ours = next((p for p in points if p["clip"] == clip and p["codec"] == "lfqcodec" and p["setting"] == quality),
                        None)  # fmt: skip
            if ours is None:
                continue
            theirs = _nearest_x265(points, ours)
            name = _clip_label(record, clip, notes) if quality == qualities[0] else ""
            setting = theirs["setting"].replace("crf", "CRF ") if theirs else "-"
            lines.append("| " + " | ".join([name, quality, *_cells(ours), setting, *_cells(theirs)]) + " |")
    bench_json = Path(record["_path"]).resolve()
    rel = lambda path: os.path.relpath(path, base.resolve().parent)  # noqa: E731  (links from the file's folder)
    model = record["model"]
    vmaf = record["vmaf"]
    source = (f"`benchmarks/model_card.sh`: `lfqcodec bench`, first {record['settings']['frames']} frames, a chunk / "
              f"keyframe every {record['settings']['gop']} frames and at scene cuts, x265 preset medium; "
              f"{record['date'][:10]}, model `{model['sha256'][:12]}` ([JSON]({rel(bench_json)}), "
              f"[table]({rel(bench_json.with_name('bench.txt'))})). bpp from file sizes, PSNR on RGB, MS-SSIM on "
              f"luma, VMAF `{vmaf['model']}` on {vmaf['rgb_to_yuv']['matrix'].upper().replace('BT', 'BT.')} "
              f"{vmaf['rgb_to_yuv']['range'].split(' ')[0]}-range Y'CbCr of the decoded RGB.")  # fmt: skip
    out = [source, "", *lines]
    if kind == "full":
        out += ["", "BD-rate against x265 (negative: lfqcodec needs fewer bits), only over the range where both "
                "curves exist (in brackets):", "",
                "| clip | PSNR | MS-SSIM | VMAF |", "|---|---|---|---|"]  # fmt: skip
        for clip, result in record["bd_rate_vs_x265"].items():
            out.append(f"| {Path(clip).stem.removesuffix('_pristine')} | {_bd(result['psnr_rgb'])} | {_bd(result['ms_ssim_y'])} | "
                       f"{_bd(result['vmaf'])} |")  # fmt: skip
    return "\n".join(out) + "\n"


def stats_table(record: dict) -> str:
    """Weights, parameters and FLOPs per pixel (``benchmarks/model_stats.py``'s JSON beside the bench JSON)."""
    stats = json.loads((Path(record["_path"]).with_name("model_stats.json")).read_text())
    enc, dec = stats["encoder_parameters"], stats["decoder_parameters"]
    return "\n".join([
        "| | |", "|---|---|",
        f"| weights | `{record['model']['name']}`, SHA-256 `{record['model']['sha256']}` |",
        f"| parameters | {enc + dec:,} (encoder {enc:,}, decoder {dec:,}) |",
        f"| FLOPs per pixel | encode {stats['encode_flops_per_pixel'] / 1e3:.0f} k, decode {stats['decode_flops_per_pixel'] / 1e3:.0f} k "
        f"(torch's FLOP counter, {stats['measured_on']}; a multiply-add is 2 FLOPs; `python benchmarks/model_stats.py`) |",
    ]) + "\n"  # fmt: skip


def rewrite(path: Path, record: dict, notes: dict[str, str]) -> int:
    """Replace every marked table in ``path``; returns how many were replaced."""
    text = path.read_text()
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        count += 1
        kind = match.group(2)
        body = stats_table(record) if kind == "stats" else table(record, kind, notes, path)
        return match.group(1) + body + match.group(4)

    new = MARKER.sub(replace, text)
    if new != text:
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_text(new)
        tmp.replace(path)
    return count


def merge(records: list[dict]) -> dict:
    """One record from per-clip bench records made with the same weights, clips in :data:`ORDER`."""
    shas = {r["model"]["sha256"] for r in records}
    if len(shas) != 1:
        raise SystemExit(f"model_card_table.py: error: the clips were measured with different weights: {sorted(shas)}")
    rank = lambda clip: ORDER.index(clip) if clip in ORDER else len(ORDER)  # noqa: E731
    records = sorted(records, key=lambda r: rank(r["points"][0]["clip"]))
    merged = {**records[-1], "date": max(r["date"] for r in records), "command": [r["command"] for r in records]}
    merged["points"] = [p for r in records for p in r["points"]]
    merged["bd_rate_vs_x265"] = {k: v for r in records for k, v in r["bd_rate_vs_x265"].items()}
    merged["pictures"] = [p for r in records for p in r.get("pictures", [])]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench_json", type=Path, nargs="+", help="lfqcodec bench --json files, one or more clips each")
    parser.add_argument("--out", type=Path, required=True, help="folder for bench.json, bench.txt, rd.png")
    parser.add_argument("--card", type=Path, default=ROOT / "models" / "lfq-base.md")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "RESULTS.md")
    parser.add_argument("--note", action="append", default=[], metavar="CLIP=TEXT",
                        help="What a clip is to the model (default: held out; see NOTES)")  # fmt: skip
    args = parser.parse_args()
    from lfqcodec.bench.suite import format_table, plot

    record = merge([json.loads(path.read_text()) for path in args.bench_json])
    merged_path = args.out / "bench.json"
    merged_path.write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "bench.txt").write_text(format_table(record) + "\n")
    plot(record, args.out / "rd.png")
    record["_path"] = str(merged_path)
    notes = {**NOTES, **dict(n.split("=", 1) for n in args.note)}
    for path in (args.card, args.results):
        print(f"{path}: {rewrite(path, record, notes)} table(s) written")


if __name__ == "__main__":
    main()
