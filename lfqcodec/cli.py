"""The ``lfqcodec`` command: a thin Click layer over :mod:`lfqcodec.api`.

Errors the user can act on are printed as one line (``lfqcodec: error: ...``) with exit status 1;
Ctrl-C exits with 130. Set ``LFQCODEC_DEBUG=1`` to see tracebacks of unexpected failures.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path

import click

from . import api
from .atomic import atomic_write_text
from .errors import LfqError

QUALITIES = ("low", "medium", "high")
# readable=False: an unreadable input is reported by the API as one line (exit 1), not as a usage error
INPUT_PATH = click.Path(readable=False, path_type=Path)
PRESETS = ("fast", "medium", "slow", "veryslow")  # lfqcodec.preset.PRESETS (not imported: keeps the CLI light)


def _printable(value: object) -> str:
    """``value`` as text with control and format characters (newlines, escapes, bidi overrides)
    escaped, so that metadata from a file cannot drive the terminal."""
    import unicodedata

    def escape(c: str) -> str:
        if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return c
        return f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"

    return "".join(map(escape, str(value)))


max_pixels_option = click.option(
    "--max-pixels", type=click.IntRange(1), default=None,
    help="Refuse files whose frames have more pixels than this (width x height), before any work.",
)  # fmt: skip


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"lfqcodec: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LfqError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory (try a smaller --window or --gop)")
        except Exception as exc:
            if os.environ.get("LFQCODEC_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set LFQCODEC_DEBUG=1 for details)")

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lfqcodec")
def main() -> None:
    """A video codec built on a causal LFQ tokenizer (MAGVIT-v2 style)."""
    signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum, frame) -> None:
    """SIGTERM (``timeout``, a service stopping a job) ends the command like Ctrl-C: temporary outputs are
    removed on the way out, never left half-written."""
    click.echo("lfqcodec: error: terminated", err=True)
    raise SystemExit(128 + signum)


device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where the network runs; auto picks CUDA when present. Plain encoding gives the same bits on either (up to "
         "latents within rounding of zero); --search bits depend on it.",
)  # fmt: skip
overwrite_option = click.option("-y", "--overwrite", is_flag=True, help="Replace OUT if it exists.")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
precision_option = click.option(
    "--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
    help="Number format of the network; auto = bf16 where the CPU/GPU has it natively, else fp32. "
         "Output may differ by rounding (bits of latents near zero); files stay valid.",
)  # fmt: skip
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Also say how the network ran (precision, layout).")
window_option = click.option(
    "--window", type=click.IntRange(1, 64), default=api.DEFAULT_WINDOW, show_default=True,
    help="Latent frames coded per step (memory vs. speed; the same bits, decoded pixels within 1).",
)  # fmt: skip


@main.command()
@click.argument("src", type=INPUT_PATH)
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--model", default=None, help="Model name in models/ or a .safetensors path [default: lfq-base].")
@click.option("--quality", type=click.Choice(QUALITIES), default="medium", show_default=True, help="Operating point.")
@click.option("--gop", type=int, default=api.DEFAULT_GOP, show_default=True,
              help="Most frames per independently decodable chunk (1 + 4k).")  # fmt: skip
@click.option("--scenecut", type=click.FloatRange(0), default=api.DEFAULT_SCENECUT, show_default=True,
              help="Start a new chunk at a scene cut: mean absolute luma change (0-255) that can mark one; 0 = off.")  # fmt: skip
@click.option("--search", "search_steps", type=click.IntRange(0), default=0, show_default=True,
              help="Search the bits against the decoder for this many steps per chunk: better pictures, same "
                   "decoder, much slower encoding (each step decodes the chunk forward and backward; "
                   "e.g. 20; 0 = off).")  # fmt: skip
@click.option("--preset", type=click.Choice(PRESETS), default="medium", show_default=True,
              help="Speed against quality at the same rate (x265's names): fast = bigger encoder steps; slow and "
                   "veryslow fit a decoder update to the clip and search the bits, each only where it pays for its "
                   "bytes (recorded in the file; decoding needs no flag).")  # fmt: skip
@click.option("--zstd-level", type=click.IntRange(1, 22), default=api.DEFAULT_ZSTD_LEVEL, show_default=True)
@click.option("--frames", "max_frames", type=click.IntRange(1), default=None, help="Encode at most this many frames.")
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
@click.option("--frames", type=click.IntRange(1), default=None, help="Number of frames to decode [default: all].")
@click.option("--model", default=None, help="Model to use instead of the installed one the file names.")
@click.option("--salvage", is_flag=True,
              help="Decode every intact chunk of a damaged file; lost frames repeat the last good one.")  # fmt: skip
@click.option("--max-pixels", type=click.IntRange(0), default=None, metavar="N",
              help="Refuse files whose frames have more pixels than this (width x height) before any work; 0 = no "
                   "limit [default: 3840x2160 = 8294400; decoding takes ~1.5 KB of memory per pixel of frame size: "
                   "1080p ~3 GB, 4K ~12 GB].")  # fmt: skip
@device_option
@precision_option
@window_option
@overwrite_option
@quiet_option
@verbose_option
@handle_errors
def decode(src, dst, start, frames, model, salvage, max_pixels, device, precision, window, overwrite, quiet,
           verbose):  # fmt: skip
    """Decode SRC (.lfq) to DST: .mkv (lossless FFV1), .mp4/.mov (H.264), .y4m or .png (one frame)."""
    report = api.decode_file(
        src, dst, device=device, start=start, frames=frames, model=model, window=window,
        overwrite=overwrite, progress=not quiet, salvage=salvage, precision=precision,
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
    if not quiet:
        click.echo(f"{dst}: {report.frames} frames ({report.seconds:.1f} s)", err=True)


@main.command()
@click.argument("src", type=INPUT_PATH)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@max_pixels_option
@handle_errors
def info(src, as_json, max_pixels):
    """Show the header, model, bitrate and chunk table of SRC (.lfq)."""
    data = api.read_info(src)
    if max_pixels is not None and data["width"] * data["height"] > max_pixels:
        raise LfqError(f"frame size {data['width']}x{data['height']} exceeds --max-pixels {max_pixels}")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    meta = {key: _printable(value) for key, value in data["metadata"].items()}
    updates = data["updates"]
    lines = [
        f"file:        {_printable(data['file'])} ({data['file_bytes']} bytes, format {data['format_version']})",
        f"model:       {meta.get('model_name', '?')} ({data['model']['id']}), quality {meta.get('quality', '?')}",
        f"video:       {data['width']}x{data['height']}, {data['frame_count']} frames @ {data['fps']} fps "
        f"({data['duration_s']:.3f} s), time base {data['time_base']}",
        f"source:      {meta.get('source_codec', '?')} {meta.get('source_pix_fmt', '?')}",
        f"encoder:     {meta.get('encoder', '?')}" + (f", preset {meta['preset']}" if meta.get("preset") else "")
        + (f", {meta['precision']}" if meta.get("precision") else "")
        + (f", bit search {meta['search_steps']} steps" if meta.get("search_steps") else ""),
        f"tokens:      {data['bits_per_token']} of {data['model_bits']} bits, grid {data['latent_grid'][0]}x"
        f"{data['latent_grid'][1]}, {data['factors']['temporal']}x{data['factors']['spatial']}x"
        f"{data['factors']['spatial']} (t x h x w)",
        "coder:       " + (f"context model {data['entropy_model']} ({data['context_coded_chunks']} of "
                            f"{len(data['chunks'])} chunks; the rest zstd bit planes)"
                            if data["context_coded_chunks"] else "zstd bit planes"),
        f"bitrate:     {data['bits_per_pixel']:.4f} bits/pixel, {data['kbit_per_second']:.1f} kbit/s",
        f"updates:     {updates['count']} decoder updates, {updates['bytes']} bytes, {updates['chunks_covered']} chunks",
        f"chunks:      {len(data['chunks'])} of up to {data['gop']} frames",
        "  index      offset       bytes  frames      coder  bits/token",
    ]
    for c in data["chunks"]:
        last = c["first_frame"] + c["frames"] - 1
        coder = "context" if c["coder"].startswith("context") else "zstd"
        lines.append(f"  {c['index']:5d} {c['offset']:11d} {c['bytes']:11d}  {c['first_frame']}-{last}"
                     f"  {coder:>9} {c['coded_bits_per_token']:11.3f}" + (f"  update {c['update']}" if c["update"] is not None else ""))
    click.echo("\n".join(lines))


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
    shape, bits = api.export_tokens(src, dst, sub_bits, overwrite, max_pixels)
    click.echo(f"{dst}: {shape} tokens of {bits} bits", err=True)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output folder: Parquet shards + manifest.json.")
@click.option("--model", default=None, help="Model name in models/ or a .safetensors path [default: lfq-base].")
@click.option("--quality", type=click.Choice(QUALITIES), default="medium", show_default=True, help="Operating point.")
@click.option("--clip-frames", type=click.IntRange(1), default=None,
              help="One row per window of this many frames, each coded on its own (1 + 4k, e.g. 33, gives whole "
                   "latent frames) [default: one row per clip].")  # fmt: skip
@click.option("--sub-bits", type=click.IntRange(1, 62), default=None,
              help="Also store factorized sub-token indices of this many bits (e.g. 8).")
@click.option("--gop", type=int, default=api.DEFAULT_GOP, show_default=True, help="As in encode.")
@click.option("--scenecut", type=click.FloatRange(0), default=api.DEFAULT_SCENECUT, show_default=True,
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
    from .tokenize import tokenize_dataset

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


@main.command()
@click.argument("videos", nargs=-1, required=True, type=INPUT_PATH)
@click.option("--frames", type=click.IntRange(1), default=33, show_default=True, help="Frames of each clip to code.")
@click.option("--codecs", default="x265", show_default=True, help="Reference codecs: any of x265,x264,svtav1.")
@click.option("--model", default=None, help="lfqcodec model [default: lfq-base].")
@click.option("--gop", type=int, default=api.DEFAULT_GOP, show_default=True, help="Chunk / keyframe interval for all codecs.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write all numbers here.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None, help="Write the RD plot (PNG) here.")
@click.option("--search", "search_steps", type=click.IntRange(0), default=0, show_default=True,
              help="lfqcodec's encoder-side bit search steps (as in encode --search).")  # fmt: skip
@click.option("--frames-png", "frames_png", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one picture per clip here (CLIP.png): a crop of one frame with motion, source / lfqcodec / "
                   "x265 at about the same bits per pixel, side by side.")  # fmt: skip
@quiet_option
@handle_errors
def bench(videos, frames, codecs, model, gop, json_path, plot_path, search_steps, frames_png, quiet):
    """Rate-distortion (PSNR, MS-SSIM, VMAF) and speed of lfqcodec against HEVC (x265) and others, on the same frames."""
    import importlib.util

    needed = ("bjontegaard", "matplotlib", "imageio_ffmpeg")
    missing = [name.replace("_", "-") for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise LfqError(f"lfqcodec bench needs the bench extra ({missing[0]} is missing): pip install 'lfqcodec[bench]'")
    from . import bench as bench_module
    for video in videos:
        if not Path(video).is_file():
            raise LfqError(f"no such file: {video}")
    bench_module.check_outputs(json_path, plot_path)  # before minutes of encoding, not after
    if frames_png is not None:
        if not frames_png.parent.is_dir():
            raise LfqError(f"output folder {frames_png.parent} does not exist")
        frames_png.mkdir(exist_ok=True)
    codec_list = [c.strip() for c in codecs.split(",") if c.strip()]
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(desc="bench", unit="run", leave=False, dynamic_ncols=True)
        say = lambda message: (bar.set_postfix_str(message), bar.update(1))
    else:
        bar, say = None, None
    record = bench_module.run_bench(list(videos), frames, codec_list, model, gop, progress=say, search_steps=search_steps,
                                     frames_png=frames_png)  # fmt: skip
    record["command"] = "lfqcodec " + " ".join(sys.argv[1:])
    if bar is not None:
        bar.close()
    click.echo(bench_module.format_table(record))
    from .atomic import atomic_output

    if json_path:
        atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
    if plot_path:
        with atomic_output(plot_path) as tmp:
            bench_module.plot(record, tmp)


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


@main.command("train-entropy")
@click.option("--model", default=None, help="Tokenizer to fit for [default: lfq-base].")
@click.option("--data", "data_dirs", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Folder (or file) of training videos and images; repeatable [default: ~/.cache/lfqcodec/data].")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output .entropy file [default: models/<tokenizer name>.entropy, next to the tokenizer].")
@click.option("--frames", type=click.IntRange(1), default=65, show_default=True, help="Frames of each clip to use.")
@click.option("--max-tokens", type=click.IntRange(1000), default=400_000, show_default=True,
              help="Tokens (drawn at random) the logistic fit uses.")
@quiet_option
@handle_errors
def train_entropy(model, data_dirs, out, frames, max_tokens, quiet):
    """Fit the context model that codes a tokenizer's bits in .lfq 2.0 (minutes on a CPU).

    Clips named bikes, carphone(_pristine), armwrestling, kitten, aquarium and vtest are held out."""
    import logging

    from .checkpoint import load_model
    from .entropy_fit import train_entropy as fit

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(message)s")
    default_data = Path.home() / ".cache/lfqcodec/data"
    data_dirs = list(data_dirs) or [default_data / "video", default_data / "images"]
    for path in data_dirs:
        if not path.exists():
            raise LfqError(f"{path} not found (run scripts/fetch_data.sh first, or pass --data)")
    say = None if quiet else (lambda message: click.echo(message, err=True))
    path, fitted = fit(load_model(model), data_dirs, out, frames, max_tokens, progress=say)
    click.echo(f"{path}: entropy model {fitted.model_id.hex()} for tokenizer {fitted.tokenizer_id.hex()}", err=True)


def _parse_blocks(value: str | None) -> tuple[int, ...] | None:
    """``"2,6"`` -> ``(2, 6)``."""
    if not value:
        return None
    try:
        return tuple(int(n) for n in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of block counts, e.g. 2,6") from None


def _parse_level_block(value: str) -> tuple[int, int]:
    """``"1.1"`` -> ``(1, 1)``."""
    try:
        level, block = (int(n) for n in value.split("."))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LEVEL.BLOCK, e.g. 1.1") from None
    return level, block


def _parse_mix(value: str | None) -> dict[str, float] | None:
    """``"low=0.4,medium=0.4"`` -> ``{"low": 0.4, "medium": 0.4}`` (names are checked by training)."""
    if not value:
        return None
    try:
        return {name.strip(): float(weight) for name, weight in (item.split("=") for item in value.split(","))}
    except ValueError:
        raise click.BadParameter(f"{value!r} is not QUALITY=WEIGHT,..., e.g. low=0.35,medium=0.45") from None


@main.command()
@click.option("--data", "data_dirs", multiple=True, type=click.Path(exists=True, readable=False, path_type=Path),
              help="Folder (or file) of training videos and images; repeatable [default: ~/.cache/lfqcodec/data].")
@click.option("--val", "val_clips", multiple=True, type=click.Path(exists=True, dir_okay=False, readable=False, path_type=Path),
              help="Held-out validation clip; repeatable (excluded from training).")
@click.option("--out", type=click.Path(path_type=Path), default=Path.home() / ".cache/lfqcodec/runs/base",
              show_default=True, help="Run folder: state, logs, data cache, best weights.")
@click.option("--steps", type=click.IntRange(1), default=12000, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak learning rate (cosine decay after warm-up).")
@click.option("--warmup", type=click.IntRange(0), default=500, show_default=True, help="Warm-up steps.")
@click.option("--freeze-decoder", is_flag=True, help="Train the encoder only (the decoder stays as initialised).")
@click.option("--entropy-boost", type=click.FloatRange(1), default=3.0, show_default=True,
              help="Entropy-loss weight multiplier at step 0, annealed to 1 (use 1 when warm-starting).")  # fmt: skip
@click.option("--entropy-weight", type=click.FloatRange(0), default=0.1, show_default=True, help="LFQ entropy-loss weight.")
@click.option("--pixel-loss", type=click.Choice(["l1", "rmse"]), default="l1", show_default=True,
              help="Pixel term of the reconstruction loss: L1, or RMSE (the batch's root mean squared error: "
                   "optimises PSNR itself).")  # fmt: skip
@click.option("--ssim-weight", type=click.FloatRange(0), default=0.2, show_default=True,
              help="Weight of the (1 - SSIM) term of the reconstruction loss.")
@click.option("--decorrelation-weight", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Weight of the bits' mean squared correlation inside a clip (asks each bit for new "
                   "information; logged as bit_correlation either way).")  # fmt: skip
@click.option("--commitment-weight", type=click.FloatRange(0), default=0.1, show_default=True, help="Commitment-loss weight.")
@click.option("--distill-steps", type=click.IntRange(0), default=0, show_default=True,
              help="Bit-search steps per training step; the encoder is taught the searched bits (0 = off).")
@click.option("--distill-weight", type=click.FloatRange(0), default=0.2, show_default=True,
              help="Weight of the encoder's cross-entropy against the searched bits.")
@click.option("--distill-lr", type=click.FloatRange(0, min_open=True), default=0.1, show_default=True,
              help="Adam step of the per-step bit search.")
@click.option("--quality-mix", default=None, metavar="Q=P,...", callback=lambda ctx, param, value: _parse_mix(value),
              help="How often each quality's bit prefix is trained, e.g. low=0.35,medium=0.45,high=0.2 "
                   "[default: low=0.25,medium=0.45,high=0.3].")  # fmt: skip
@click.option("--encoder-blocks", default=None, metavar="N,N", callback=lambda ctx, param, value: _parse_blocks(value),
              help="Residual blocks per encoder level, e.g. 2,6 (grows the --init model's encoder; new blocks start "
                   "as identity; ignored when resuming OUT/state.pt) [default: the --init model's, else the "
                   "built-in architecture].")  # fmt: skip
@click.option("--decoder-blocks", default=None, metavar="N,N", callback=lambda ctx, param, value: _parse_blocks(value),
              help="Residual blocks per decoder level, finest first, e.g. 6,4 (6 at 1/4 resolution, 4 at 1/8); "
                   "grows the --init model's decoder the same way.")  # fmt: skip
@click.option("--drop-decoder-block", "drop_blocks", multiple=True, metavar="LEVEL.BLOCK",
              callback=lambda ctx, param, value: tuple(_parse_level_block(v) for v in value),
              help="Remove this residual block from the --init model's decoder before the warm start (LEVEL as in "
                   "--decoder-blocks, 0 = finest; BLOCK from 0); repeatable, applied in order. "
                   "benchmarks/block_importance.py measures what each block is worth.")  # fmt: skip
@click.option("--refine-blocks", default=None, metavar="N,N", callback=lambda ctx, param, value: _parse_blocks(value),
              help="Residual blocks per refiner stage (per-frame work), e.g. 3,1; added blocks start as identity.")
@click.option("--frame-split/--no-frame-split", default=None,
              help="The refiner also reads the coarsest decoder features split into frames (starts as a no-op) "
                   "[default: as the --init model].")  # fmt: skip
@click.option("--exclude", multiple=True, metavar="FILE_NAME",
              help="Keep this file (by name, e.g. kitten.mp4) out of the training material; repeatable. For clips "
                   "held out for measuring.")  # fmt: skip
@click.option("--batch", type=click.IntRange(1), default=3, show_default=True, help="Video clips per step.")
@click.option("--frames", type=click.IntRange(1), default=33, show_default=True,
              help="Frames per training clip (1 + 4k); as long as the chunks the codec codes (--gop), or the "
                   "decoder never learns their later frames.")  # fmt: skip
@click.option("--size", type=click.IntRange(16), default=64, show_default=True, help="Crop side in pixels.")
@click.option("--max-stride", type=click.IntRange(1), default=2, show_default=True,
              help="Largest temporal stride of video crops (more motion per clip).")
@click.option("--pan-speed", type=click.FloatRange(0), default=3.0, show_default=True,
              help="Fastest synthetic camera move over photos, pixels per frame.")
@click.option("--val-every", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--val-frames", type=click.IntRange(1), default=33, show_default=True,
              help="Frames of each validation clip (33 = a whole default chunk).")
@click.option("--init", default=None, help="Warm-start from this model (name or path) when no run state exists.")
@click.option("--name", default="lfq-base", show_default=True, help="Name recorded in the weights.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default="auto", show_default=True,
              help="Training arithmetic: bf16 autocast (fp32 weights and quantizer losses) or fp32; auto = bf16 on "
                   "CUDA and on CPUs with native bf16 (AVX512-BF16/AMX, ~1.8x faster there), else fp32.")
@device_option
@handle_errors
def train(data_dirs, val_clips, out, steps, lr, warmup, freeze_decoder, entropy_boost, entropy_weight, pixel_loss,
          ssim_weight, decorrelation_weight, commitment_weight, distill_steps, distill_weight, distill_lr, quality_mix,
          encoder_blocks, decoder_blocks, drop_blocks, refine_blocks, frame_split, exclude, batch, frames, size, max_stride, pan_speed, val_every, val_frames, init, name, precision, device):  # fmt: skip
    """Train the tokenizer (resumes from OUT/state.pt when present). Works with torchrun for multi-GPU."""
    import dataclasses
    import logging

    from .checkpoint import load_model
    from .config import TokenizerConfig
    from .data import SamplerConfig
    from .train import TrainConfig
    from .train import train as run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    default_data = Path.home() / ".cache/lfqcodec/data"
    data_dirs = list(data_dirs) or [default_data / "video", default_data / "images"]
    val_clips = list(val_clips) or [default_data / "video/bikes.mp4", default_data / "video/carphone_pristine.mp4"]
    for path in [*data_dirs, *val_clips]:
        if not path.exists():
            raise LfqError(f"{path} not found (run scripts/fetch_data.sh first, or pass --data/--val)")
    model_cfg = load_model(init).tokenizer.cfg if init else TokenizerConfig()
    if drop_blocks and not init:
        raise LfqError("--drop-decoder-block needs --init (it edits a trained model)")
    for level, block in drop_blocks:
        if not 0 <= level < len(model_cfg.decoder_blocks) or not 0 <= block < model_cfg.decoder_blocks[level] or \
                model_cfg.decoder_blocks[level] == 1:
            raise LfqError(f"--drop-decoder-block {level}.{block}: the decoder has blocks {model_cfg.decoder_blocks}")
        remaining = list(model_cfg.decoder_blocks)
        remaining[level] -= 1
        model_cfg = dataclasses.replace(model_cfg, decoder_blocks=tuple(remaining))
    if frame_split is not None:
        model_cfg = dataclasses.replace(model_cfg, frame_split=frame_split)
    for option, blocks in (("encoder_blocks", encoder_blocks), ("decoder_blocks", decoder_blocks),
                           ("refine_blocks", refine_blocks)):
        if blocks:
            try:
                model_cfg = dataclasses.replace(model_cfg, **{option: blocks})
            except ValueError as exc:
                raise LfqError(f"--{option.replace('_', '-')}: {exc}") from None
    run_training(
        model_cfg,
        TrainConfig(steps=steps, lr=lr, warmup=warmup, entropy_boost=entropy_boost, entropy_weight=entropy_weight,
                    commitment_weight=commitment_weight, pixel_loss=pixel_loss, ssim_weight=ssim_weight,
                    decorrelation_weight=decorrelation_weight, batch=batch, distill_steps=distill_steps,
                    distill_weight=distill_weight, distill_lr=distill_lr,
                    **({"quality_probs": quality_mix} if quality_mix else {}), val_every=val_every,
                    val_frames=val_frames, bf16=None if precision == "auto" else precision == "bf16",
                    freeze_decoder=freeze_decoder),
        SamplerConfig(frames=frames, size=size, max_stride=max_stride, pan_speed=pan_speed), data_dirs, val_clips, out, init=init, name=name, device=device,
        exclude=tuple(exclude), drop_decoder_blocks=drop_blocks,
    )  # fmt: skip


if __name__ == "__main__":
    main()
