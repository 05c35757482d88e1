"""Merge the rows of several ``preset_bench.py`` runs (a measurement split over commands, for example
past a ``--deadline``) into one record with one summary.

    python benchmarks/merge_preset_bench.py A.json B.json [...] --presets medium slow veryslow --out MERGED.json

A later file's row replaces an earlier one's for the same clip and preset; every input's command,
machine and date are kept, and each merged row says which input it came from. The first preset is
the reference of the summary (``preset_bench.summarise``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from preset_bench import summarise


def merge(records: list[tuple[str, dict]], presets: list[str]) -> dict:
    """One record from ``(file name, record)`` pairs; a merged record among them keeps its inputs,
    its rows their sources and its note (under ``notes``)."""
    rows: dict[tuple[str, str], dict] = {}
    inputs, notes = [], []
    kept_fields = ("command", "machine", "torch", "date", "model_sha256", "git_commit")
    for name, record in records:
        merged = "inputs" in record
        for row in record["rows"]:
            rows[(row["clip"], row["preset"])] = {**row, "source": row["source"] if merged else name}
        inputs += record["inputs"] if merged else [{"file": name, **{k: record.get(k) for k in kept_fields}}]
        notes += [n for n in [record.get("note"), *record.get("notes", [])] if n]
    order = {name: i for i, name in enumerate(presets)}
    kept = [rows[key] for key in sorted(rows, key=lambda k: (order.get(k[1], len(presets)), k[0]))]
    return {"inputs": inputs, "rows": kept, "summary": summarise(kept, presets), **({"notes": notes} if notes else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", nargs="+", type=Path)
    parser.add_argument("--presets", nargs="+", default=["medium", "slow", "veryslow"])
    parser.add_argument("--note", default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    merged = merge([(p.name, json.loads(p.read_text())) for p in args.records], args.presets)
    if args.note:
        merged["note"] = args.note
    args.out.write_text(json.dumps(merged, indent=1) + "\n")
    print(json.dumps(merged["summary"], indent=1))


if __name__ == "__main__":
    main()
