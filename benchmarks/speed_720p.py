"""720p encode and decode speed of lfqcodec beside release 1873cc4 and x265 medium, in one run.

    git worktree add --detach /tmp/rel-1873cc4 1873cc4      # the release to compare with
    python benchmarks/speed_720p.py [--clip /work/shared/data/video/cockatoo.mp4] [--frames 33] \\
        [--release /tmp/rel-1873cc4] [--rounds 2] [--out benchmarks/results/speed_720p.json]

Every lfqcodec measurement is the library's ``encode_file`` / ``decode_file`` (the CLI's code path:
H.264 demuxing and decoding, colour conversion, the network, zstd, FFV1 muxing) on the first
``--frames`` frames of a real clip, in a fresh child process, with ``PYTHONPATH`` pointing at the
release's worktree or at this checkout. Release and branch runs alternate, ``--rounds`` times, so
that both see the same machine; the speed-up is the median of the per-round ratios (wall clock,
and CPU seconds, which a shared machine disturbs less). x265 medium (CRF 28, PyAV) codes the same
frames in the same run. The background training (``/tmp/lfq-train.pid``) is paused
(SIGSTOP) during each timed run and resumed right after.

Also recorded: PSNR of every path against the source, achieved GFLOP/s (FLOPs per pixel from
``benchmarks/model_stats.py``), peak resident memory of a 1080p encode and decode (release and
branch), and what the branch's default precision (int8 on a CPU with VNNI, ``--compare``) changes
against fp32: the fraction of differing bits, the largest fp32 latent whose sign flips, and PSNR on
real held-out clips.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lfqcodec.training.heldout import measuring_clips

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRAIN_PID = Path("/tmp/lfq-train.pid")
DATA = Path("/work/shared/data/video")


# --- children (run with PYTHONPATH = the checkout under test) ------------------------------------


def child(task: dict) -> dict:
    """One timed ``encode_file`` or ``decode_file`` call, or the precision comparison."""
    import lfqcodec

    if task["task"] == "precision":
        return precision_report(task["clips"], task["compare"])
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if task["task"] == "encode":
        report = lfqcodec.encode_file(task["src"], task["dst"], device="cpu", overwrite=True,
                                      max_frames=task["frames"], **task["options"])  # fmt: skip
        frames = report.header.frame_count
    else:
        report = lfqcodec.decode_file(task["src"], task["dst"], device="cpu", overwrite=True, **task["options"])
        frames = report.frames
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds, "cpu_seconds": cpu,
            "peak_rss_mib": _peak_rss_mib(), "mode": getattr(report, "mode", "fp32 (release)")}  # fmt: skip


def _peak_rss_mib() -> float:
    """This process's peak resident memory (``VmHWM``; ``ru_maxrss`` would include the parent's
    peak, which survives fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def precision_report(clips: list[list], other: str) -> list[dict]:
    """``other`` (bf16 or int8) against fp32 on real clips: bits of the latents, PSNR of the four
    encoder/decoder pairs."""
    import torch

    from lfqcodec.api import decode_frames, encode_frames
    from lfqcodec.bench.suite import quality_metrics, read_clip
    from lfqcodec.model.checkpoint import MODELS_DIR, load_model
    from lfqcodec.model.inference import InferenceMode, encode_latents, prepare_tokenizer
    from lfqcodec.model.int8 import find_calibration

    model = load_model()
    ranges = find_calibration(model.model_id, MODELS_DIR)
    keep = model.config.quality_bits["medium"]
    rows = []
    for path, count in clips:
        frames, fps = read_clip(Path(path), count)
        h, w = frames.shape[1:3]
        s = model.config.spatial_factor
        video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        video = video[..., : h // s * s, : w // s * s]  # whole tokens only, for the latent comparison
        latents = {}
        for precision in ("fp32", other):
            mode = InferenceMode(precision, True, "asked for")
            latents[precision] = encode_latents(prepare_tokenizer(model.tokenizer, mode, ranges), video, True, mode)[:, :keep]
        flips = (latents["fp32"] > 0) != (latents[other] > 0)
        row = {"clip": Path(path).name, "precision": other, "frames": len(frames), "size": f"{w}x{h}", "bits_compared": flips.numel(),
               "bits_differing_fraction": flips.float().mean().item(),
               "largest_fp32_latent_flipped": latents["fp32"].abs()[flips].max().item() if flips.any() else 0.0,
               "median_abs_fp32_latent": latents["fp32"].abs().median().item()}  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            for enc in ("fp32", other):
                lfq = Path(tmp) / f"{enc}.lfq"
                encode_frames(iter(frames), lfq, width=w, height=h, fps=fps, model=model, device="cpu", precision=enc)
                row[f"bytes_{enc}_encoder"] = lfq.stat().st_size
                for dec in ("fp32", other):
                    decoded = np.stack(list(decode_frames(lfq, device="cpu", model=model, precision=dec)))
                    row[f"psnr_{enc}_encoder_{dec}_decoder"] = quality_metrics(frames, decoded)["psnr_rgb"]
        rows.append(row)
    return rows


# --- the parent -----------------------------------------------------------------------------------


@contextlib.contextmanager
def training_paused():
    """SIGSTOP the background training for the block (if it runs); always SIGCONT it after."""
    pid = None
    with contextlib.suppress(OSError, ValueError):
        pid = int(TRAIN_PID.read_text().strip())
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)


def run_child(root: Path, task: dict) -> dict | list:
    env = {**os.environ, "PYTHONPATH": str(root)}
    with training_paused():
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(task)], env=env, check=True,
                             capture_output=True, text=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def lfq_round(root: Path, clip: Path, frames: int, workdir: Path, tag: str, options: dict) -> dict:
    lfq, mkv = workdir / f"{tag}.lfq", workdir / f"{tag}.mkv"
    enc = run_child(root, {"task": "encode", "src": str(clip), "dst": str(lfq), "frames": frames, "options": options})
    dec = run_child(root, {"task": "decode", "src": str(lfq), "dst": str(mkv), "options": options})
    print(f"  {tag:28s} encode {enc['fps']:.3f} fps ({enc['cpu_seconds']:.0f} CPU s), "
          f"decode {dec['fps']:.3f} fps ({dec['cpu_seconds']:.0f} CPU s)", file=sys.stderr, flush=True)  # fmt: skip
    return {"encode": enc, "decode": dec, "bytes": lfq.stat().st_size, "output": str(mkv)}


def make_1080p(clip: Path, frames: int, dst: Path) -> None:
    """``frames`` frames of ``clip`` scaled to 1920x1080 (bicubic), as lossless FFV1."""
    import av

    from lfqcodec.io.videoio import VideoWriter

    writer = VideoWriter(dst, 1920, 1080, 25)
    with av.open(str(clip)) as container:
        for frame, _ in zip(container.decode(video=0), range(frames)):
            writer.write(frame.reformat(width=1920, height=1080, format="rgb24").to_ndarray())
    writer.close()


def peak_memory(variants: dict, clip: Path, frames: int, work: Path) -> dict:
    """Peak resident memory of each variant's encode and decode of ``frames`` 1080p frames."""
    big = work / "1080p.mkv"
    make_1080p(clip, frames, big)
    memory = {}
    for name, (root, options) in variants.items():
        m = lfq_round(root, big, frames, work, f"{name.split()[0]}-1080p", options)
        memory[name] = {"encode_peak_rss_mib": m["encode"]["peak_rss_mib"], "decode_peak_rss_mib": m["decode"]["peak_rss_mib"]}
    return memory


def summarise(runs: list[dict], key: str) -> dict:
    fps = [r[key]["fps"] for r in runs]
    return {"fps_median": statistics.median(fps), "fps_all": fps,
            "cpu_seconds_median": statistics.median(r[key]["cpu_seconds"] for r in runs)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=DATA / "cockatoo.mp4", help="a real 1280x720 clip")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--release", type=Path, default=Path("/tmp/rel-1873cc4"), help="worktree of release 1873cc4")
    parser.add_argument("--rounds", type=int, default=2, help="alternating release / branch measurements")
    parser.add_argument("--memory-frames", type=int, default=9, help="frames of the 1080p memory check")
    parser.add_argument("--precision-clips", nargs="*", default=[f"{c}:33" for c in measuring_clips()],
                        help="PATH:FRAMES clips for the comparison with fp32")  # fmt: skip
    parser.add_argument("--compare", choices=["int8", "bf16"], default="int8", help="precision compared with fp32")
    parser.add_argument("--extras", choices=["all", "fp32", "pipeline", "none"], default="all",
                        help="also time the branch in fp32 (fp32), without the pipeline (pipeline), or those and "
                             "--precision bf16 (all)")
    parser.add_argument("--memory-only", action="store_true", help="only the 1080p peak-memory check")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed_720p.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    import torch
    from model_stats import model_stats

    from lfqcodec.bench.suite import quality_metrics, read_clip, run_reference

    if not (args.release / "lfqcodec").is_dir():
        sys.exit(f"no release checkout at {args.release}: git worktree add --detach {args.release} 1873cc4")
    variants = {"release 1873cc4": (args.release, {}), "branch (defaults)": (ROOT, {})}
    if args.memory_only:
        with tempfile.TemporaryDirectory() as tmp:
            memory = peak_memory(variants, args.clip, args.memory_frames, Path(tmp))
        record = {"command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "machine": f"{platform.machine()}, {os.cpu_count()} cores, {_cpu_name()}, torch {torch.__version__}",
                  "peak_memory_1080p": memory}  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(json.dumps(memory, indent=2))
        return
    source, fps = read_clip(args.clip, args.frames)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    x265_runs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
            for name, (root, options) in variants.items():
                runs[name].append(lfq_round(root, args.clip, args.frames, work, name.split()[0], options))
            with training_paused():
                size, decoded, timing = run_reference("x265", 28, source, fps, gop=args.frames)
            x265_runs.append({"bytes": size, **timing, "psnr_rgb": quality_metrics(source, decoded)["psnr_rgb"]})
            print(f"  x265 medium encode {len(source) / timing['encode_s']:.1f} fps, decode "
                  f"{len(source) / timing['decode_s']:.1f} fps", file=sys.stderr, flush=True)  # fmt: skip
        extras = {"branch fp32 (asked for)": ("fp32", {"precision": "fp32"}),
                  "branch fp32, no pipeline": ("nopipe", {"precision": "fp32", "pipeline": False}),
                  "branch bf16 (asked for)": ("bf16", {"precision": "bf16"})}  # fmt: skip
        chosen = {"all": list(extras), "fp32": list(extras)[:1], "pipeline": list(extras)[1:2], "none": []}[args.extras]
        for name in chosen:
            tag, options = extras[name]
            runs[name] = [lfq_round(ROOT, args.clip, args.frames, work, tag, options)]
        quality = {name: quality_metrics(source, read_clip(Path(rs[-1]["output"]), args.frames)[0])["psnr_rgb"]
                   for name, rs in runs.items()}  # fmt: skip
        memory = peak_memory(variants, args.clip, args.memory_frames, work)
        clips = [[c.rsplit(":", 1)[0], int(c.rsplit(":", 1)[1])] for c in args.precision_clips]
        precision = run_child(ROOT, {"task": "precision", "clips": clips, "compare": args.compare}) if clips else []
    stats = model_stats(None, 17, 256)
    pixels = source.shape[1] * source.shape[2]
    x265 = {"encode_fps_median": statistics.median(args.frames / x["encode_s"] for x in x265_runs),
            "decode_fps_median": statistics.median(args.frames / x["decode_s"] for x in x265_runs),
            "psnr_rgb": x265_runs[0]["psnr_rgb"], "bytes": x265_runs[0]["bytes"], "crf": 28, "runs": x265_runs}  # fmt: skip
    summary = {}
    for name, rs in runs.items():
        row = {"psnr_rgb": quality[name], "bytes": rs[-1]["bytes"], "mode": rs[-1]["decode"]["mode"]}
        for key in ("encode", "decode"):
            s = summarise(rs, key)
            flops = stats[f"{key}_flops_per_pixel"] * pixels * s["fps_median"]
            row[key] = {**s, "gflop_per_s": flops / 1e9, "fraction_of_x265": s["fps_median"] / x265[f"{key}_fps_median"]}
        summary[name] = row
    rel, new = runs["release 1873cc4"], runs["branch (defaults)"]
    speedup = {
        key: {"wall_median_of_round_ratios": statistics.median(b[key]["fps"] / a[key]["fps"] for a, b in zip(rel, new)),
              "cpu_seconds_median_of_round_ratios": statistics.median(
                  a[key]["cpu_seconds"] / b[key]["cpu_seconds"] for a, b in zip(rel, new))}
        for key in ("encode", "decode")
    }  # fmt: skip
    record = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {_cpu_name()}, torch {torch.__version__}, "
                   f"CPU capability {torch.backends.cpu.get_cpu_capability()}",
        "load_average_at_end": os.getloadavg(),
        "auto_precision_here": runs["branch (defaults)"][-1]["decode"]["mode"],
        "clip": f"{args.clip.name}, first {args.frames} frames, {source.shape[2]}x{source.shape[1]}",
        "flops_per_pixel": {k: stats[f"{k}_flops_per_pixel"] for k in ("encode", "decode")},
        "speedup_branch_over_release": speedup,
        "summary": summary,
        "x265_medium": x265,
        "peak_memory_1080p": memory,
        "precision_vs_fp32": precision,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(format_table(record))


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def format_table(record: dict) -> str:
    lines = [f"{record['clip']} on {record['machine']}", f"{'path':28s} {'enc fps':>8s} {'dec fps':>8s} "
             f"{'enc/x265':>9s} {'dec/x265':>9s} {'enc GF/s':>9s} {'dec GF/s':>9s} {'PSNR':>7s}"]  # fmt: skip
    for name, row in record["summary"].items():
        e, d = row["encode"], row["decode"]
        lines.append(f"{name:28s} {e['fps_median']:8.3f} {d['fps_median']:8.3f} {e['fraction_of_x265']:9.2%} "
                     f"{d['fraction_of_x265']:9.2%} {e['gflop_per_s']:9.1f} {d['gflop_per_s']:9.1f} {row['psnr_rgb']:7.2f}")  # fmt: skip
    x = record["x265_medium"]
    lines.append(f"{'x265 medium (CRF 28)':28s} {x['encode_fps_median']:8.1f} {x['decode_fps_median']:8.1f} "
                 f"{'':9s} {'':9s} {'':9s} {'':9s} {x['psnr_rgb']:7.2f}")  # fmt: skip
    for key, s in record["speedup_branch_over_release"].items():
        lines.append(f"{key} speed-up over release: {s['wall_median_of_round_ratios']:.2f}x wall, "
                     f"{s['cpu_seconds_median_of_round_ratios']:.2f}x CPU time")  # fmt: skip
    for name, m in record["peak_memory_1080p"].items():
        lines.append(f"1080p peak RSS {name}: encode {m['encode_peak_rss_mib']:.0f} MiB, decode {m['decode_peak_rss_mib']:.0f} MiB")
    for p in record["precision_vs_fp32"]:
        o = p["precision"]
        lines.append(f"{o} vs fp32 on {p['clip']} ({p['size']}, {p['frames']} f): {p['bits_differing_fraction']:.2e} of bits "
                     f"differ (largest |fp32 latent| flipped {p['largest_fp32_latent_flipped']:.3f}); PSNR fp32/fp32 "
                     f"{p['psnr_fp32_encoder_fp32_decoder']:.3f}, fp32 enc/{o} dec {p[f'psnr_fp32_encoder_{o}_decoder']:.3f}, "
                     f"{o}/{o} {p[f'psnr_{o}_encoder_{o}_decoder']:.3f} dB")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
