"""Clips per second of ``lfqcodec tokenize`` on a folder of short real clips: 2 local worker processes
of 1 thread each against 1 worker of 1 thread (and 1 worker of 2 threads, for reference).

    [setsid] python benchmarks/tokenize_bench.py [--clips 48] [--frames 17] [--size 192] [--repeats 2] [--nice N]
        [--src /work/shared/data/video] [--out benchmarks/results/tokenize-DATE.json]

The clips are cut from the real videos in ``--src`` (consecutive ``--frames``-frame segments, centre
crops of at most ``--size`` pixels, lossless FFV1 in a temporary folder), round-robin over the
videos. Each configuration runs ``lfqcodec tokenize`` as a fresh command (``--shard-size 8``, shipped
model, quality medium, CPU) into a new output folder; configurations are interleaved and repeated,
and the best run of each is compared (the machine is shared: the spread is in the JSON). Two times
are kept per run: the tokenize call as the manifest records it (worker start-up and model loading
included) and the whole command (Python and torch start-up included). While timing, the background
training run (pid in ``/tmp/lfq-train.pid``, if any) is paused with SIGSTOP and always resumed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIGS = [("1x1", 1, 1), ("2x1", 2, 1), ("1x2", 1, 2)]  # name, workers, threads per worker


def make_clips(src: Path, folder: Path, clips: int, frames: int, size: int) -> list[Path]:
    """``clips`` short lossless clips cut from the videos in ``src`` (round-robin over the videos)."""
    videos = sorted(p for p in src.iterdir() if p.suffix in (".mp4", ".mkv", ".avi")) if src.is_dir() else [src]
    segments: list[list[np.ndarray]] = []
    readers = {}
    for video in videos:
        container = av.open(str(video))
        readers[video] = (container, container.decode(video=0))
    while len(segments) < clips and readers:
        for video in list(readers):
            container, decoder = readers[video]
            segment = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), decoder)]
            if len(segment) < frames:
                container.close()
                del readers[video]
                continue
            segments.append(segment)
            if len(segments) == clips:
                break
    for container, _ in readers.values():
        container.close()
    paths = []
    for i, segment in enumerate(segments):
        h, w = segment[0].shape[:2]
        ch, cw = min(size, h) // 8 * 8, min(size, w) // 8 * 8
        top, left = (h - ch) // 2, (w - cw) // 2
        path = folder / f"clip{i:03d}.mkv"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("ffv1", rate=25)
            stream.width, stream.height, stream.pix_fmt = cw, ch, "bgr0"
            for n, frame in enumerate(segment):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[top : top + ch, left : left + cw]), "rgb24")
                vf.pts = n
                for packet in stream.encode(vf):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        paths.append(path)
    return paths


def run_once(clips: Path, out: Path, workers: int, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "lfqcodec.cli", "tokenize", str(clips), "--out", str(out), "--shard-size", "8",
               "--workers", str(workers), "--threads", str(threads), "--device", "cpu", "-q"]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    manifest = json.loads((out / "manifest.json").read_text())
    clips_done = manifest["counts"]["clips_tokenized"]
    seconds = manifest["seconds_this_run"]
    return {"clips": clips_done, "tokenize_s": seconds, "clips_per_s": clips_done / seconds, "command_s": wall,
            "clips_per_s_command": clips_done / wall, "loadavg": os.getloadavg()[0]}  # fmt: skip


@contextlib.contextmanager
def training_paused(pid_file: Path):
    """SIGSTOP the background training while timing; SIGCONT it whatever happens."""
    pid = int(pid_file.read_text().split()[0]) if pid_file.is_file() else None
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        yield pid
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--src", type=Path, default=Path("/work/shared/data/video"))
    parser.add_argument("--pid-file", type=Path, default=Path("/tmp/lfq-train.pid"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--nice", type=int, default=0,
                        help="Raise the priority of the runs by N nice levels (root only), for this process and its "
                             "scheduler autogroup (Linux shares the CPU between autogroups (setsid) first: start the script "
                             "with `setsid` so its group is its own), so that on a machine other jobs load the runs "
                             "get the cores about as on an idle one.")  # fmt: skip
    args = parser.parse_args()
    load_before = os.getloadavg()
    if args.nice:
        os.nice(-args.nice)
        with contextlib.suppress(OSError):
            Path("/proc/self/autogroup").write_text(str(-args.nice))
    date = datetime.datetime.now(datetime.timezone.utc)
    out_path = args.out or HERE / "results" / f"tokenize-{date:%Y-%m-%d}.json"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        paths = make_clips(args.src, folder, args.clips, args.frames, args.size)
        sizes = sorted({f"{w}x{h}" for w, h in (_size(p) for p in paths)})
        runs: dict[str, list[dict]] = {name: [] for name, _, _ in CONFIGS}
        with training_paused(args.pid_file) as paused:
            for repeat in range(args.repeats):
                for name, workers, threads in CONFIGS:
                    result = run_once(folder, Path(tmp) / f"out-{name}-{repeat}", workers, threads)
                    runs[name].append(result)
                    print(f"{name}: {result['clips_per_s']:.3f} clips/s ({result['tokenize_s']:.1f} s; whole "
                          f"command {result['command_s']:.1f} s, load {result['loadavg']:.1f})")  # fmt: skip
    best = {name: max(r["clips_per_s"] for r in rs) for name, rs in runs.items()}
    best_cmd = {name: max(r["clips_per_s_command"] for r in rs) for name, rs in runs.items()}
    record = {
        "command": "python " + " ".join([str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute()
                                         else sys.argv[0], *sys.argv[1:]]),  # fmt: skip
        "date": date.isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": _torch_version(), "platform": platform.platform()},  # fmt: skip
        "training_paused_pid": paused,
        "nice": -args.nice,
        "autogroup": _read("/proc/self/autogroup"),
        "loadavg_before": load_before,
        "clips": {"count": len(paths), "frames": args.frames, "sizes": sizes, "source": str(args.src)},
        "settings": "lfqcodec tokenize FOLDER --out OUT --shard-size 8 --device cpu (model lfq-base, quality medium)",
        "runs": runs,
        "best_clips_per_s": best,
        "speedup_2x1_vs_1x1": best["2x1"] / best["1x1"],
        "speedup_2x1_vs_1x2": best["2x1"] / best["1x2"],
        "speedup_2x1_vs_1x1_whole_command": best_cmd["2x1"] / best_cmd["1x1"],
    }
    out_path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"2 workers x 1 thread vs 1 x 1: {record['speedup_2x1_vs_1x1']:.2f}x clips/s "
          f"(whole command {record['speedup_2x1_vs_1x1_whole_command']:.2f}x); vs 1 x 2 threads: "
          f"{record['speedup_2x1_vs_1x2']:.2f}x -> {out_path}")  # fmt: skip


def _size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


def _read(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text().strip()
    return "?"


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _torch_version() -> str:
    import torch

    return torch.__version__


def _git(*args: str) -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    return "?"


if __name__ == "__main__":
    main()
