"""``lfqcodec bench``: the rate-distortion and speed comparison of the CLI (registered on
:func:`lfqcodec.cli.commands.main`); the work is in :mod:`lfqcodec.bench.suite`, imported only when the command runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import handle_errors, quiet_option
from ..base.errors import LfqError

BENCH_PRESETS = ("fast", "medium", "slow", "veryslow")  # lfqcodec.presets.preset.PRESETS (not imported: keeps the CLI light)
BENCH_QUALITIES = ("low", "medium", "high")


def _names(allowed: tuple[str, ...]):
    """A callback taking ``--opt a,b --opt c`` (repeated and/or comma-separated) to ``("a", "b", "c")``,
    each one of ``allowed``, in the order given, without repeats; none given: ``()``."""

    def parse(ctx, param, values: tuple[str, ...]) -> tuple[str, ...]:
        names = [n.strip() for value in values for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise click.BadParameter(f"{unknown[0]!r} is not one of {', '.join(allowed)}")
        return tuple(dict.fromkeys(names))

    return parse


@click.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path(readable=False, path_type=Path))
@click.option("--frames", type=click.IntRange(1), default=33, show_default=True, help="Frames of each clip to code.")
@click.option("--codecs", default="x265", show_default=True, help="Reference codecs: any of x265,x264,svtav1.")
@click.option("--model", default=None, help="lfqcodec model [default: lfq-base].")
@click.option("--preset", "presets", multiple=True, callback=_names(BENCH_PRESETS), metavar="NAME[,NAME...]",
              help="lfqcodec preset(s) to measure, each its own curve: any of fast,medium,slow,veryslow, "
                   "comma-separated or repeated (slow presets take minutes per quality) [default: medium].")  # fmt: skip
@click.option("--quality", "qualities", multiple=True, callback=_names(BENCH_QUALITIES), metavar="Q[,Q...]",
              help="lfqcodec qualities to measure: any of low,medium,high [default: all three].")  # fmt: skip
@click.option("--gop", type=int, default=33, show_default=True, help="Chunk / keyframe interval for all codecs.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write all numbers here.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None, help="Write the RD plot (PNG) here.")
@click.option("--search", "search_steps", type=click.IntRange(0), default=0, show_default=True,
              help="lfqcodec's encoder-side bit search steps (as in encode --search).")  # fmt: skip
@click.option("--frames-png", "frames_png", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one picture per clip here (CLIP.png): a crop of one frame with motion, source / lfqcodec / "
                   "x265 at about the same bits per pixel, side by side (the first --preset).")  # fmt: skip
@quiet_option
@handle_errors
def bench(videos, frames, codecs, model, presets, qualities, gop, json_path, plot_path, search_steps, frames_png,
          quiet):  # fmt: skip
    """Rate-distortion (PSNR, MS-SSIM, VMAF) and speed of lfqcodec against HEVC (x265) and others, on the same frames.

    Each encode and each decode runs in a fresh process of its own: the enc / dec MiB columns are the
    peak resident memory (RSS) of that process."""
    import importlib.util

    needed = ("bjontegaard", "matplotlib", "imageio_ffmpeg")
    missing = [name.replace("_", "-") for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise LfqError(f"lfqcodec bench needs the bench extra ({missing[0]} is missing): pip install 'lfqcodec[bench]'")
    from ..bench import suite as bench_module
    from ..bench import report
    from ..base.atomic import atomic_output, atomic_write_text

    for video in videos:
        if not Path(video).is_file():
            raise LfqError(f"no such file: {video}")
    report.check_outputs(json_path, plot_path)  # before minutes of encoding, not after
    if frames_png is not None:
        if not frames_png.parent.is_dir():
            raise LfqError(f"output folder {frames_png.parent} does not exist")
        frames_png.mkdir(exist_ok=True)
    codec_list = [c.strip() for c in codecs.split(",") if c.strip()]
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(desc="bench", unit="run", leave=False, dynamic_ncols=True)
        say = lambda message: (bar.set_postfix_str(message), bar.update(1))  # noqa: E731
    else:
        bar, say = None, None
    record = bench_module.run_bench(list(videos), frames, codec_list, model, gop, progress=say,
                                    search_steps=search_steps, frames_png=frames_png, presets=list(presets) or None,
                                    qualities=list(qualities) or None)  # fmt: skip
    record["command"] = "lfqcodec " + " ".join(sys.argv[1:])
    if bar is not None:
        bar.close()
    click.echo(report.format_table(record))
    if json_path:
        atomic_write_text(json_path, json.dumps(record, indent=2) + "\n")
    if plot_path:
        with atomic_output(plot_path) as tmp:
            report.plot(record, tmp)
