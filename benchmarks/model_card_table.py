"""Write the results tables of the model card and the README from a ``lfqcodec bench`` JSON.

    python benchmarks/model_card_table.py benchmarks/results/model-card/bench.json [--card models/lfq-base.md]
        [--readme README.md] [--note CLIP=TEXT ...]

Run by ``benchmarks/model_card.sh`` after its bench; re-running it alone rewrites the tables from the
committed JSON. Each file holds its table between the lines ``<!-- results table (kind): begin ...``
and ``<!-- results table: end -->``; ``kind`` is ``full`` (every quality, x265 beside each, BD-rates:
the model card) or ``short`` (medium only: the README). Everything else in the files is left as is.
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
    "bikes.mp4": "selection clip: chose every model so far",
    "carphone_pristine.mp4": "selection clip: chose every model so far",
    "vtest.avi": "in the training data of these weights",
}
MARKER = re.compile(r"(<!-- results table \((full|short)\): begin[^\n]*-->\n)(.*?)(<!-- results table: end -->)", re.S)


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
    return f"{Path(clip).stem} {p['width']}x{p['height']} ({note})"


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
    source = (f"`benchmarks/model_card.sh` (`lfqcodec bench`, first {record['settings']['frames']} "
              f"frames of each clip, chunk / keyframe at least every {record['settings']['gop']} frames and at scene "
              f"cuts for both codecs, x265 preset medium yuv420p; {record['date'][:10]}, {record['machine']['cpu_cores']} "
              f"CPU cores, model `{model['name']}` `{model['sha256'][:12]}`; [JSON]({rel(bench_json)}), "
              f"[table]({rel(bench_json.with_name('bench.txt'))})). VMAF: `{record['vmaf']['model']}` (libvmaf "
              f"{record['vmaf']['libvmaf']}) on {record['vmaf']['rgb_to_yuv']['matrix'].upper()} "
              f"{record['vmaf']['rgb_to_yuv']['range'].split(' ')[0]}-range Y'CbCr from the decoded RGB; "
              f"PSNR over RGB, MS-SSIM on BT.601 luma; bpp from file sizes.")  # fmt: skip
    out = [source, "", *lines]
    if kind == "full":
        out += ["", "BD-rate of lfqcodec against x265 (negative: lfqcodec needs fewer bits for the same quality; "
                "only over the quality range where both curves exist, given in brackets):", "",
                "| clip | PSNR | MS-SSIM | VMAF |", "|---|---|---|---|"]  # fmt: skip
        for clip, result in record["bd_rate_vs_x265"].items():
            out.append(f"| {Path(clip).stem} | {_bd(result['psnr_rgb'])} | {_bd(result['ms_ssim_y'])} | "
                       f"{_bd(result['vmaf'])} |")  # fmt: skip
    return "\n".join(out) + "\n"


def rewrite(path: Path, record: dict, notes: dict[str, str]) -> int:
    """Replace every marked table in ``path``; returns how many were replaced."""
    text = path.read_text()
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        count += 1
        return match.group(1) + table(record, match.group(2), notes, path) + match.group(4)

    new = MARKER.sub(replace, text)
    if new != text:
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_text(new)
        tmp.replace(path)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench_json", type=Path)
    parser.add_argument("--card", type=Path, default=ROOT / "models" / "lfq-base.md")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--note", action="append", default=[], metavar="CLIP=TEXT",
                        help="What a clip is to the model (default: held out; see NOTES)")  # fmt: skip
    args = parser.parse_args()
    record = json.loads(args.bench_json.read_text())
    record["_path"] = str(args.bench_json)
    notes = {**NOTES, **dict(n.split("=", 1) for n in args.note)}
    for path in (args.card, args.readme):
        print(f"{path}: {rewrite(path, record, notes)} table(s) written")


if __name__ == "__main__":
    main()
