"""``lfqcodec info``: a file's header, model, bitrate and chunk table, as text or JSON. Both are
written as the chunk table is read, a block of rows at a time, so memory stays that of the reader
(64 bytes a chunk) however many chunks a file holds."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import TextIO

import click

from .. import api
from ..base.errors import LfqError
from .common import INPUT_PATH, handle_errors

ROWS_PER_WRITE = 4096


def printable(value: object) -> str:
    """``value`` as text with control and format characters (newlines, escapes, bidi overrides)
    escaped, so that metadata from a file cannot drive the terminal."""
    import unicodedata

    def escape(c: str) -> str:
        if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return c
        return f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"

    return "".join(map(escape, str(value)))


def _blocks(rows, line) -> Iterator[list[str]]:
    for start in range(0, len(rows), ROWS_PER_WRITE):
        yield [line(rows[i]) for i in range(start, min(len(rows), start + ROWS_PER_WRITE))]


def write_json(data: dict, out: TextIO) -> None:
    """``data`` of :func:`lfqcodec.read_info` as JSON, ``chunks`` last, one chunk a line."""
    rows = data["chunks"]
    summary = json.dumps({key: value for key, value in data.items() if key != "chunks"}, indent=2)
    out.write(summary[:-2] + ',\n  "chunks": [')
    for n, block in enumerate(_blocks(rows, json.dumps)):
        out.write(("," if n else "") + ",".join("\n    " + row for row in block))
    out.write("\n  ]\n}\n" if len(rows) else "]\n}\n")


def _chunk_line(c: dict) -> str:
    last = c["first_frame"] + c["frames"] - 1
    coder = ("context+net" if "network" in c["coder"] else "context") if c["coder"].startswith("context") else "zstd"
    return (f"  {c['index']:5d} {c['offset']:11d} {c['bytes']:11d}  {c['first_frame']}-{last}"
            f"  {coder:>11} {c['coded_bits_per_token']:11.3f}" + (f"  update {c['update']}" if c["update"] is not None else ""))  # fmt: skip


def _coder_line(data: dict) -> str:
    chunks, coded = len(data["chunks"]), data["context_coded_chunks"]
    if not coded:
        return "zstd bit planes"
    network = any("network" in name for name in data["coders"])
    rest = "; the rest zstd bit planes)" if coded < chunks else ")"
    return f"context model{' + network' if network else ''} {data['entropy_model']} ({coded} of {chunks} chunks{rest}"


def write_text(data: dict, out: TextIO) -> None:
    meta = {key: printable(value) for key, value in data["metadata"].items()}
    updates = data["updates"]
    lines = [
        f"file:        {printable(data['file'])} ({data['file_bytes']} bytes, format {data['format_version']})",
        f"model:       {meta.get('model_name', '?')} ({data['model']['id']}), quality {meta.get('quality', '?')}"
        + (f"; {data['model']['design']}" if data["model"].get("design") else "; not installed"),
        f"video:       {data['width']}x{data['height']}, {data['frame_count']} frames @ {data['fps']} fps "
        f"({data['duration_s']:.3f} s), time base {data['time_base']}",
        f"source:      {meta.get('source_codec', '?')} {meta.get('source_pix_fmt', '?')}",
        f"encoder:     {meta.get('encoder', '?')}" + (f", preset {meta['preset']}" if meta.get("preset") else "")
        + (f", {meta['precision']}" if meta.get("precision") else "")
        + (f", bit search {meta['search_steps']} steps" if meta.get("search_steps") else ""),
        f"tokens:      {data['bits_per_token']} of {data['model_bits']} bits, grid {data['latent_grid'][0]}x"
        f"{data['latent_grid'][1]}, {data['factors']['temporal']}x{data['factors']['spatial']}x"
        f"{data['factors']['spatial']} (t x h x w)",
        f"coder:       {_coder_line(data)}",
        f"bitrate:     {data['bits_per_pixel']:.4f} bits/pixel, {data['kbit_per_second']:.1f} kbit/s",
        f"updates:     {updates['count']} decoder updates, {updates['bytes']} bytes, {updates['chunks_covered']} chunks",
        f"chunks:      {len(data['chunks'])} of up to {data['gop']} frames",
        "  index      offset       bytes  frames        coder  bits/token",
    ]
    out.write("\n".join(lines) + "\n")
    for block in _blocks(data["chunks"], _chunk_line):
        out.write("\n".join(block) + "\n")


@click.command()
@click.argument("src", type=INPUT_PATH)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--max-pixels", type=click.IntRange(0), default=0, show_default=True, metavar="N",
              help="Refuse files whose frames have more pixels than this (width x height); 0 = no limit.")  # fmt: skip
@handle_errors
def info(src, as_json, max_pixels):
    """Show the header, model, bitrate and chunk table of SRC (.lfq)."""
    data = api.read_info(src)
    if max_pixels and data["width"] * data["height"] > max_pixels:
        raise LfqError(f"frame size {data['width']}x{data['height']} exceeds --max-pixels {max_pixels}")
    (write_json if as_json else write_text)(data, sys.stdout)
