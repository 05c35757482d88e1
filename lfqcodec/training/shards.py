"""Split a file into parts of bounded size and join them back, checked by SHA-256.

A lent GPU machine returns at most 8 files of at most 16 MiB each, and a model file is larger; so the
GPU job writes ``NAME.part-00``, ``NAME.part-01``, ... and ``NAME.parts.json`` (part names, sizes,
the whole file's SHA-256), and ``python -m lfqcodec.training.shards join DIR/NAME`` rebuilds ``NAME``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from ..base.atomic import atomic_output
from ..base.errors import LfqError

PART_BYTES = 15 << 20  # under the 16 MiB a returned file may have


def split_file(path: Path, out_dir: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """Write ``path`` as parts in ``out_dir`` (each written atomically, the list last); returns the paths."""
    data = path.read_bytes()
    names = []
    for index, offset in enumerate(range(0, max(1, len(data)), part_bytes)):
        part = out_dir / f"{path.name}.part-{index:02d}"
        with atomic_output(part) as tmp:
            tmp.write_bytes(data[offset : offset + part_bytes])
        names.append(part)
    listing = {"file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
               "parts": [p.name for p in names]}  # fmt: skip
    with atomic_output(out_dir / f"{path.name}.parts.json") as tmp:
        tmp.write_text(json.dumps(listing, indent=1))
    return names


def join_parts(listing_path: Path, target: Path | None = None) -> Path:
    """Rebuild the file that ``NAME.parts.json`` lists (next to it unless ``target``); checks its SHA-256."""
    try:
        listing = json.loads(listing_path.read_text())
        data = b"".join((listing_path.parent / name).read_bytes() for name in listing["parts"])
    except (OSError, ValueError, KeyError) as exc:
        raise LfqError(f"{listing_path}: cannot read the parts: {exc}") from None
    if len(data) != listing["bytes"] or hashlib.sha256(data).hexdigest() != listing["sha256"]:
        raise LfqError(f"{listing_path}: the joined parts do not match the recorded size and SHA-256")
    target = target or listing_path.parent / listing["file"]
    with atomic_output(target) as tmp:
        tmp.write_bytes(data)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lfqcodec.training.shards", description=__doc__.split("\n\n")[0])
    parser.add_argument("verb", choices=["join"])
    parser.add_argument("listing", type=Path, help="NAME.parts.json")
    parser.add_argument("--out", type=Path, default=None, help="where to write the joined file")
    args = parser.parse_args(argv)
    try:
        print(join_parts(args.listing, args.out))
    except LfqError as exc:
        sys.exit(f"lfqcodec: error: {exc}")


if __name__ == "__main__":
    main()
