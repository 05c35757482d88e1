"""``lfqcodec detokenize``: token files back to video or to ``.lfq`` (a thin layer over
:func:`lfqcodec.tokens.detokenize.detokenize_file`)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import click

from .common import INPUT_PATH, decode_device_option, handle_errors, quiet_option



def _fps(ctx, param, value: str | None) -> Fraction | None:
    if value is None:
        return None
    try:
        rate = Fraction(value.strip())
    except (ValueError, ZeroDivisionError):
        raise click.BadParameter(f"{value!r} is not a frame rate like 25, 29.97 or 30000/1001") from None
    if not 0 < rate <= 1000:
        raise click.BadParameter(f"{value!r} is outside 0..1000 frames per second")
    return rate


def _size(ctx, param, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size like 1280x720") from None
    if width < 1 or height < 1:
        raise click.BadParameter(f"{value!r}: width and height must be >= 1")
    return width, height


def _memory(ctx, param, value: str) -> int:
    from .common import _parse_size

    return _parse_size(ctx, param, value)


@click.command()
@click.argument("src", type=INPUT_PATH)
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--shard", type=click.IntRange(0), default=None,
              help="Shard of a token dataset folder (lfqcodec tokenize --out) [default: 0].")  # fmt: skip
@click.option("--row", "rows", default=None, metavar="N|A-B", help="Row of the shard, or rows A to B [default: 0].")
@click.option("--clip", default=None, metavar="SOURCE", help="Every row of this source clip, in order (its windows).")
@click.option("--model", default=None, help="Model to use instead of the installed one the tokens name.")
@click.option("--fps", callback=_fps, default=None, help="Frame rate (e.g. 30000/1001), for files that do not record it.")
@click.option("--size", callback=_size, default=None, metavar="WxH",
              help="Frame size, for files that do not record it [default: the whole token grid].")  # fmt: skip
@click.option("--frames", type=click.IntRange(1), default=None,
              help="Frames the tokens hold: lays them out in chunks of --gop frames (generated or edited tokens "
                   "of another length; files that do not record their chunks).")  # fmt: skip
@click.option("--gop", type=click.IntRange(1), default=None,
              help="Frames per chunk where the file does not record its chunks [default: as recorded, else 33].")  # fmt: skip
@click.option("--quality", type=click.Choice(("low", "medium", "high")), default=None,
              help="Bits per token, for arrays that do not record them.")  # fmt: skip
@click.option("--max-pixels", type=click.IntRange(0), default=None, metavar="N",
              help="Refuse frames with more pixels than this before any work; 0 = no limit [default: 3840x2160].")  # fmt: skip
@click.option("--max-memory", default="1800M", show_default=True, metavar="SIZE", callback=_memory,
              help="Peak memory of the process (as in decode); large frames are decoded in tiles.")  # fmt: skip
@decode_device_option
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32", "int8"]), default="auto", show_default=True,
              help="Number format of the network, as in decode.")  # fmt: skip
@click.option("--window", type=click.IntRange(1, 64), default=2, show_default=True, help="As in decode.")
@click.option("-y", "--overwrite", is_flag=True, help="Replace DST if it exists.")
@quiet_option
@click.option("-v", "--verbose", is_flag=True, help="Also say how the network ran.")
@handle_errors
def detokenize(src, dst, shard, rows, clip, model, fps, size, frames, gop, quality, max_pixels, max_memory, device,
               precision, window, overwrite, quiet, verbose):  # fmt: skip
    """Decode the tokens in SRC back to video DST, or store them as DST.lfq.

    SRC: what lfqcodec tokens writes (.npz: indices, or sub_indices + sub_bits), or a token dataset
    of lfqcodec tokenize (a shard .parquet, or its folder with --shard) with --row / --clip. DST: .mkv
    (lossless FFV1), .mp4/.mov (H.264), .y4m, .png (one frame), or .lfq (decode gives the same frames)."""
    from ..tokens.detokenize import detokenize_file

    report = detokenize_file(
        src, dst, shard=shard, rows=rows, clip=clip, model=model, fps=fps, size=size, frames=frames, gop=gop,
        quality=quality, device=device, precision=precision, window=window, max_memory=max_memory,
        overwrite=overwrite, progress=not quiet, **({} if max_pixels is None else {"max_pixels": max_pixels}),
    )  # fmt: skip
    for warning in report.warnings:
        click.echo(f"lfqcodec: warning: {warning}", err=True)
    if verbose and report.mode:
        click.echo(f"network: {report.mode}", err=True)
    if not quiet:
        click.echo(f"{dst}: {report.frames} frames ({report.seconds:.1f} s)", err=True)
