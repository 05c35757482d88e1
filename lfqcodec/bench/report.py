"""What ``lfqcodec bench`` shows of its record: the table, the BD-rate lines and the RD plot, and the
check of its outputs before any work (the measuring is :mod:`lfqcodec.bench.suite`)."""

from __future__ import annotations

from pathlib import Path

from ..base.atomic import atomic_open, check_destination
from ..base.errors import LfqError


def curve_label(point: dict) -> str:
    """``lfqcodec``, ``lfqcodec slow`` (a preset other than medium), ``x265``: one line of the plot each."""
    preset = point.get("preset")
    return point["codec"] if preset in (None, "medium") else f"{point['codec']} {preset}"


def format_bd(metric: str, result: dict) -> str:
    """``psnr_rgb -12.3% over 21..23.1 (25% of x265's range, 90% of lfqcodec's: not meaningful)``."""
    value = result["bd_rate_percent"]
    if value is None:
        return f"{metric} n/a ({result['note']})"
    (low, high), share = result["overlap"], result.get("overlap_share")
    if share is None:  # a record written before the shares were
        return f"{metric} {value:+.1f}% (over {low:.3g}..{high:.3g} only)"
    verdict = "" if result["meaningful"] else ": not meaningful, under half of the narrower range"
    return (f"{metric} {value:+.1f}% over {low:.3g}..{high:.3g} ({share['anchor']:.0%} of x265's range, "
            f"{share['test']:.0%} of lfqcodec's{verdict})")


def format_table(record: dict) -> str:
    lines = [f"{'clip':22s} {'codec':9s} {'setting':15s} {'dev':4s} {'bpp':>7s} {'kbit/s':>8s} {'PSNR':>6s} "
             f"{'PSNR-Y':>6s} {'MS-SSIM':>7s} {'VMAF':>5s} {'enc fps':>8s} {'dec fps':>8s} {'enc MiB':>7s} {'dec MiB':>7s}"]  # fmt: skip
    fmt_mem = lambda v: f"{v:7.0f}" if v is not None else "      -"  # noqa: E731
    if record["settings"].get("lfqcodec_search_steps"):
        lines.insert(0, f"lfqcodec encoded with --search {record['settings']['lfqcodec_search_steps']}")
    for p in record["points"]:
        setting = f"{p['preset']} {p['setting']}" if p.get("preset") else p["setting"]
        lines.append(
            f"{p['clip'][:22]:22s} {p['codec']:9s} {setting:15s} {p['device']:4s} {p['bpp']:7.4f} {p['kbit_s']:8.1f} "
            f"{p['psnr_rgb']:6.2f} {p['psnr_y']:6.2f} {p['ms_ssim_y']:7.4f} {p['vmaf']:5.1f} {p['encode_fps']:8.2f} {p['decode_fps']:8.2f} "
            f"{fmt_mem(p['encode_peak_mib'])} {fmt_mem(p['decode_peak_mib'])}"
        )
    if record["settings"].get("peak_mib"):
        lines.append(f"enc / dec MiB: {record['settings']['peak_mib']}")
    for clip, metrics in record["bd_rate_vs_x265"].items():
        parts = [format_bd(metric, result) for metric, result in metrics.items()]
        lines.append(f"BD-rate of lfqcodec vs x265 on {clip}: " + "; ".join(parts))
    return "\n".join(lines)


def plot(record: dict, path: Path) -> None:
    """Bits per pixel against PSNR (RGB), MS-SSIM (luma) and VMAF, one row per clip, one line per codec (and
    lfqcodec preset)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = list(dict.fromkeys(p["clip"] for p in record["points"]))
    fig, axes = plt.subplots(len(clips), 3, figsize=(15, 4 * len(clips)), squeeze=False)
    for row, clip in enumerate(clips):
        for col, (metric, label) in enumerate((("psnr_rgb", "PSNR RGB (dB)"), ("ms_ssim_y", "MS-SSIM (luma)"), ("vmaf", "VMAF (v0.6.1)"))):
            ax = axes[row][col]
            for curve in dict.fromkeys(map(curve_label, record["points"])):
                pts = sorted((p["bpp"], p[metric]) for p in record["points"]
                             if p["clip"] == clip and curve_label(p) == curve and p["device"] == "cpu")  # fmt: skip
                ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=curve)
            ax.set_xscale("log")
            ax.set_xlabel("bits per pixel (file size)")
            ax.set_ylabel(label)
            ax.set_title(clip)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    with atomic_open(path) as handle:
        fig.savefig(handle, dpi=100, format=Path(path).suffix[1:].lower())
    plt.close(fig)


PLOT_FORMATS = (".png", ".pdf", ".svg")


def check_outputs(json_path: Path | None, plot_path: Path | None) -> None:
    """Refuse, before any work, outputs that could not be written: a folder, a missing folder, a
    device, or a plot whose extension names no image format. Existing files are replaced."""
    for path in (json_path, plot_path):
        if path is not None:
            check_destination(path, overwrite=True)
    if plot_path is not None and plot_path.suffix.lower() not in PLOT_FORMATS:
        raise LfqError(f"--plot {plot_path}: use one of {', '.join(PLOT_FORMATS)}")
