"""The ``lfqcodec`` command: a thin Click layer over :mod:`lfqcodec.api`.

Errors the user can act on, bad option values and unknown options included, are printed as one line
(``lfqcodec: error: ...``) with exit status 1 (:mod:`lfqcodec.cli.common`); Ctrl-C exits with 130.
Set ``LFQCODEC_DEBUG=1`` to see tracebacks of unexpected failures.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from .. import api
from .bench import bench
from .common import (INPUT_PATH, FiniteRange, OneLineErrorGroup, QualityOption, Terminated, _parse_size,
                     decode_device_option, device_option, handle_errors, quiet_option)
from .info import info
from .tokens import detokenize
from .train import calibrate_int8, train, train_entropy

QUALITIES = ("low", "medium", "high")
PRESETS = ("fast", "medium", "slow", "veryslow")  # lfqcodec.presets.preset.PRESETS (not imported: keeps the CLI light)


max_pixels_option = click.option(
    "--max-pixels", type=click.IntRange(0), default=None, metavar="N",
    help="Refuse files whose frames have more pixels than this (width x height) before any work; 0 = no "
         "limit [default: 3840x2160 = 8294400; decoding time grows with the frame size].",
)  # fmt: skip


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lfqcodec")
def main() -> None:
    """A video codec built on a causal LFQ tokenizer (MAGVIT-v2 style)."""
    signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum, frame) -> None:
    """SIGTERM (``timeout``, a service stopping a job) ends the command like Ctrl-C: temporary outputs are
    removed on the way out, never left half-written."""
    raise Terminated(signum)


overwrite_option = click.option("-y", "--overwrite", is_flag=True, help="Replace DST if it exists.")
precision_option = click.option(
    "--precision", type=click.Choice(["auto", "bf16", "fp32", "int8"]), default="auto", show_default=True,
    help="Number format of the network; auto = int8 on CPUs with VNNI/AMX (calibrated models), else bf16 "
         "where the CPU/GPU has it natively, else fp32. Output may differ by rounding (bits of latents near "
         "zero); files stay valid.",
)  # fmt: skip
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Also say how the network ran (precision, layout; decode: tiles).")
window_option = click.option(
    "--window", type=click.IntRange(1, 64), default=api.DEFAULT_WINDOW, show_default=True,
    help="Latent frames coded per step (memory vs. speed; the same bits, decoded pixels within 1).",
)  # fmt: skip
decode_window_option = click.option(
    "--window", type=click.IntRange(1, 64), default=api.DEFAULT_WINDOW, show_default=True,
    help="Latent frames (4 frames each) decoded per step: memory vs. speed; pixels within 1 of any other window.",
)  # fmt: skip
quality_option = click.option(
    "--quality", type=click.Choice(QUALITIES), default="medium", show_default=True, cls=QualityOption,
    help="Operating point: bits kept per token{bits}; recorded in the file, decoding needs no flag.",
)  # fmt: skip


@main.command()
@click.argument("src", type=INPUT_PATH)
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--model", default=None, help="Model name in models/ or a .safetensors path [default: lfq-base].")
@quality_option
@click.option("--gop", type=int, default=api.DEFAULT_GOP, show_default=True,
              help="Most frames per independently decodable chunk (1 + 4k).")  # fmt: skip
@click.option("--scenecut", type=FiniteRange(0), default=api.DEFAULT_SCENECUT, show_default=True,
              help="Start a new chunk at a scene cut: mean absolute luma change (0-255) that can mark one; 0 = off.")  # fmt: skip
@click.option("--search", "search_steps", type=click.IntRange(0), default=0, show_default=True,
              help="Search the bits against the decoder for this many steps per chunk: better pictures, same "
                   "decoder, much slower encoding (each step decodes the chunk forward and backward; "
                   "e.g. 20; 0 = off).")  # fmt: skip
@click.option("--preset", type=click.Choice(PRESETS), default="medium", show_default=True,
              help="Speed against quality at the same rate (x265's names): fast = bigger encoder steps; slow and "
                   "veryslow fit a decoder update to the clip and search the bits, each only where it pays for its "
                   "bytes (recorded in the file; decoding needs no flag).")  # fmt: skip
@click.option("--zstd-level", type=click.IntRange(1, 22), default=api.DEFAULT_ZSTD_LEVEL, show_default=True,
              help="zstd level (1-22) of the chunks kept as zstd bit planes (those the context coder does not make "
                   "smaller, and every chunk without an entropy model); higher: smaller, slower to encode; --preset "
                   "fast sets 9.")  # fmt: skip
@click.option("--frames", "max_frames", type=click.IntRange(1), default=None,
              help="Encode the first N frames only [default: all].")
@device_option
@precision_option
@window_option
@overwrite_option
@quiet_option
@verbose_option
@handle_errors
def encode(src, dst, model, quality, gop, scenecut, search_steps, preset, zstd_level, max_frames, device, precision,
           window, overwrite, quiet, verbose):  # fmt: skip
    """Compress the video SRC (anything FFmpeg reads) into DST (.lfq)."""
    report = api.encode_file(
        src, dst, model=model, quality=quality, device=device, gop=gop, scenecut=scenecut, zstd_level=zstd_level,
        search_steps=search_steps, window=window, overwrite=overwrite, progress=not quiet, max_frames=max_frames,
        preset=preset,
        precision=precision,
    )  # fmt: skip
    for warning in report.warnings:
        click.echo(f"lfqcodec: warning: {warning}", err=True)
    if verbose:
        click.echo(f"network: {report.mode}", err=True)
    if not quiet:
        h = report.header
        click.echo(
            f"{dst}: {h.frame_count} frames {h.width}x{h.height} @ {float(h.fps):.3f} fps, {report.file_bytes} bytes, "
            f"{report.bits_per_pixel:.4f} bpp, {report.kbit_per_second:.1f} kbit/s ({report.seconds:.1f} s)",
            err=True,
        )


@main.command()
@click.argument("src", type=INPUT_PATH)
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--start", type=click.IntRange(0), default=0, show_default=True, help="First frame to decode.")
@click.option("--frames", type=click.IntRange(1), default=None,
              help="Number of frames to write from --start [default: to the end; 1 for a .png].")
@click.option("--model", default=None, help="Model to use instead of the installed one the file names.")
@click.option("--salvage", is_flag=True,
              help="Decode every intact chunk of a damaged file; lost frames repeat the last good one.")  # fmt: skip
@max_pixels_option
@click.option("--max-memory", default="1800M", show_default=True, metavar="SIZE", callback=_parse_size,
              help="Peak memory of the process (K/M/G suffixes; 0 = no limit). Frames too large for it are decoded "
                   "in tiles, with the same pixels, more slowly.")  # fmt: skip
@decode_device_option
@precision_option
@decode_window_option
@overwrite_option
@quiet_option
@verbose_option
@handle_errors
def decode(src, dst, start, frames, model, salvage, max_pixels, max_memory, device, precision, window, overwrite,
           quiet, verbose):  # fmt: skip
    """Decode SRC (.lfq) to DST: .mkv (lossless FFV1), .mp4/.mov (H.264), .y4m, or .png (one frame: the one at
    --start)."""
    report = api.decode_file(
        src, dst, device=device, start=start, frames=frames, model=model, window=window,
        overwrite=overwrite, progress=not quiet, salvage=salvage, precision=precision, max_memory=max_memory,
        **({} if max_pixels is None else {"max_pixels": max_pixels}),
    )  # fmt: skip
    if verbose:
        click.echo(f"network: {report.mode}", err=True)
    if report.lost:
        ranges = ", ".join(f"{a}-{b}" for a, b in report.lost)
        click.echo(f"lfqcodec: warning: could not recover frames {ranges} (damaged chunks: repeated, or left out "
                   "after the last intact chunk)", err=True)  # fmt: skip
    for record, first, last in report.lost_updates:
        click.echo(f"lfqcodec: warning: decoder update {record} (chunks {first}-{last}) is damaged: those chunks "
                   "were decoded without it", err=True)  # fmt: skip
    for line in report.notes:  # salvage: each frame invented, each record skipped or not trusted
        click.echo(f"lfqcodec: warning: {line}", err=True)
    if not quiet:
        click.echo(f"{dst}: {report.frames} frames ({report.seconds:.1f} s)", err=True)


@main.command()
@click.argument("src", type=INPUT_PATH)
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--sub-bits", type=click.IntRange(1, 62), default=None,
              help="Also export factorized sub-token indices of this many bits (e.g. 8).")  # fmt: skip
@max_pixels_option
@overwrite_option
@handle_errors
def tokens(src, dst, sub_bits, max_pixels, overwrite):
    """Export the token indices of SRC (.lfq) to DST (.npz) for language-model training.

    Arrays: indices (T' x H' x W', int64; bit i = latent channel i, LSB first), chunk_starts,
    bits, and with --sub-bits: sub_indices (T' x H' x W' x n) and sub_bits."""
    shape, bits = api.export_tokens(src, dst, sub_bits, overwrite, **({} if max_pixels is None else {"max_pixels": max_pixels}))
    click.echo(f"{dst}: {shape} tokens of {bits} bits", err=True)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output folder: Parquet shards + manifest.json.")
@click.option("--model", default=None, help="Model name in models/ or a .safetensors path [default: lfq-base].")
@quality_option
@click.option("--clip-frames", type=click.IntRange(1), default=None,
              help="One row per window of this many frames, each coded on its own (1 + 4k, e.g. 33, gives whole "
                   "latent frames) [default: one row per clip].")  # fmt: skip
@click.option("--sub-bits", type=click.IntRange(1, 62), default=None,
              help="Also store factorized sub-token indices of this many bits (e.g. 8).")
@click.option("--gop", type=int, default=api.DEFAULT_GOP, show_default=True, help="As in encode.")
@click.option("--scenecut", type=FiniteRange(0), default=api.DEFAULT_SCENECUT, show_default=True,
              help="As in encode.")
@click.option("--search", "search_steps", type=click.IntRange(0), default=0, show_default=True,
              help="As in encode (slow).")
@click.option("--shard-size", type=click.IntRange(1), default=64, show_default=True,
              help="Clips per shard (the unit a rerun skips when complete).")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Worker processes, each with its own model (or Ray actors with --ray) "
                   "[default: one per core, at most 8; one per GPU].")  # fmt: skip
@click.option("--threads", type=click.IntRange(1), default=None, help="Threads per worker [default: cores / workers].")
@click.option("--ray", "ray_address", default=None, metavar="auto|local|ADDRESS",
              help="Run the workers on Ray (needs lfqcodec[scale]): auto = the running cluster, local = a new "
                   "instance on this machine, or HOST:6379 / ray://HOST:10001.")  # fmt: skip
@device_option
@window_option
@click.option("-y", "--overwrite", is_flag=True, help="Replace a dataset in OUT made with other settings or inputs.")
@quiet_option
@handle_errors
def tokenize(inputs, out, model, quality, clip_frames, sub_bits, gop, scenecut, search_steps, shard_size, workers,
             threads, ray_address, device, window, overwrite, quiet):  # fmt: skip
    """Tokenize every video and image in INPUTS (files, folders, glob patterns) into sharded Parquet token
    datasets for language-model training. A rerun skips the shards already complete."""
    from ..tokens.tokenize import tokenize_dataset

    report = tokenize_dataset(
        inputs, out, model=model, quality=quality, clip_frames=clip_frames, sub_bits=sub_bits, gop=gop,
        scenecut=scenecut, search_steps=search_steps, window=window, shard_size=shard_size, workers=workers,
        threads=threads, device=device, ray=ray_address, overwrite=overwrite, progress=not quiet,
        command=_command_line(click.get_current_context()), warn=_warn_above_bar,
    )  # fmt: skip
    c = report.manifest["counts"]
    if c["clips_failed"]:
        click.echo(f"lfqcodec: warning: {c['clips_failed']} clips could not be read (listed in the manifest)", err=True)
    if not quiet:
        click.echo(
            f"{out}: {c['clips_tokenized']} of {c['clips']} clips -> {c['rows']} rows, {c['tokens']} tokens in "
            f"{c['shards_complete']} shards; {report.clips_done} clips this run "
            f"({report.clips_per_second:.2f} clips/s, {report.seconds:.1f} s)",
            err=True,
        )


def _warn_above_bar(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _command_line(ctx: click.Context) -> str:
    """The command as given (the options set on the command line, in canonical form), for manifests."""
    import shlex

    words = ["lfqcodec", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if ctx.get_parameter_source(param.name) != click.core.ParameterSource.COMMANDLINE:
            continue
        if isinstance(param, click.Argument):
            words += [str(v) for v in (value if isinstance(value, tuple) else [value])]
        elif getattr(param, "is_flag", False):
            words.append(param.opts[-1]) if value else None
        else:
            words += [max(param.opts, key=len), str(value)]
    return shlex.join(words)


main.add_command(info)
main.add_command(bench)
main.add_command(train)
main.add_command(train_entropy)
main.add_command(calibrate_int8)
main.add_command(detokenize)


if __name__ == "__main__":
    main()
