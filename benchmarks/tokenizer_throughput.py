"""Throughput of ``lfqcodec.Tokenizer.encode`` / ``decode`` on frames in memory, beside the file path's.

    python benchmarks/tokenizer_throughput.py [--clip /work/shared/data/video/cockatoo.mp4] \\
        [--sizes 256x256,1280x720] [--frames 17] [--rounds 3] [--device auto] [--precision auto] \\
        [--out benchmarks/results/tokenizer_throughput.json]

For each frame size, the first ``--frames`` frames of a real clip (scaled, bicubic; a generated
moving pattern when the clip is missing) are held in memory and timed through:

- ``tokenizer_encode``: ``Tokenizer.encode(uint8 T x H x W x 3)`` -> indices;
- ``tokenizer_decode``: ``Tokenizer.decode(indices)`` -> uint8 frames;
- ``tokenizer_encode_torch`` / ``tokenizer_decode_torch``: the same on a torch ``1 x 3 x T x H x W``
  batch in [-1, 1] on the tokenizer's device (CUDA when there);
- ``file_encode_tokens``: the file path to the same tokens, ``encode_frames`` (frames -> ``.lfq``,
  entropy coding included) then ``export_tokens`` (``.lfq`` -> ``.npz``);
- ``file_detokenize``: ``detokenize_file`` (``.npz`` -> lossless ``.mkv``), and ``file_decode``:
  ``decode_file`` (``.lfq`` -> ``.mkv``), what a user of the command line runs.

Each is run ``--rounds`` times (after one untimed warm-up call of the tokenizer); the JSON keeps
every time and the median, frames per second, and the run's command, machine, CPU model and flags
(``/proc/cpuinfo``), torch version and threads, device, precision, load average and date (UTC).
Run it on a quiet machine: the numbers are only as good as the machine's idleness.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLIP = Path("/work/shared/data/video/cockatoo.mp4")


def read_frames(clip: Path, count: int, width: int, height: int) -> tuple[np.ndarray, str]:
    """``count`` frames of ``clip`` scaled to ``width x height`` (uint8 RGB), or a moving pattern."""
    if clip.is_file():
        import av

        with av.open(str(clip)) as container:
            frames = [f.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray()
                      for f, _ in zip(container.decode(video=0), range(count))]  # fmt: skip
        if len(frames) == count:
            return np.stack(frames), str(clip)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = [np.stack([np.sin((x + 3 * t) / (9 + 4 * c)) * np.cos((y - t) / (11 + c)) for c in range(3)], -1)
              for t in range(count)]  # fmt: skip
    return ((np.stack(frames) + 1) * 127.5).astype(np.uint8), "generated moving pattern"


def machine() -> dict:
    from lfqcodec.model.inference import cpu_flags

    cpu = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")  # fmt: skip
    except OSError:
        pass
    return {"node": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cores": os.cpu_count(), "cpu_flags": sorted(cpu_flags())}  # fmt: skip


def timed(fn, rounds: int) -> tuple[list[float], object]:
    seconds, result = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return seconds, result


def summary(seconds: list[float], frames: int) -> dict:
    median = statistics.median(seconds)
    return {"seconds": seconds, "seconds_median": median, "fps": frames / median}


def measure(tok, frames: np.ndarray, rounds: int, work: Path, options: dict) -> dict:
    import torch

    import lfqcodec
    from lfqcodec.tokens.detokenize import detokenize_file

    count, (height, width) = len(frames), frames.shape[1:3]
    sync = torch.cuda.synchronize if tok.device.type == "cuda" else (lambda: None)
    tok.decode(tok.encode(frames[:1]), frames=1)  # warm-up: first calls allocate
    out: dict = {}
    seconds, indices = timed(lambda: tok.encode(frames), rounds)
    out["tokenizer_encode"] = summary(seconds, count)
    seconds, decoded = timed(lambda: tok.decode(indices, frames=count, size=(height, width)), rounds)
    out["tokenizer_decode"] = summary(seconds, count)
    video = (torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1).to(tok.device)

    def encode_torch():
        result = tok.encode(video)
        sync()
        return result

    def decode_torch():
        result = tok.decode(batch, frames=count, size=(height, width))
        sync()
        return result

    seconds, batch = timed(encode_torch, rounds)
    out["tokenizer_encode_torch"] = summary(seconds, count)
    seconds, _ = timed(decode_torch, rounds)
    out["tokenizer_decode_torch"] = summary(seconds, count)
    lfq, npz = work / "clip.lfq", work / "clip.npz"

    def file_encode():
        lfqcodec.encode_frames(iter(frames), lfq, width=width, height=height, fps=Fraction(25), model=tok.model,
                               quality=tok.quality, scenecut=0, overwrite=True, **options)  # fmt: skip
        lfqcodec.export_tokens(lfq, npz, overwrite=True)

    seconds, _ = timed(file_encode, rounds)
    out["file_encode_tokens"] = summary(seconds, count)
    same_tokens = bool(np.array_equal(np.load(npz)["indices"], indices))
    seconds, _ = timed(lambda: detokenize_file(npz, work / "det.mkv", model=tok.model.path, overwrite=True, **options),
                       rounds)  # fmt: skip
    out["file_detokenize"] = summary(seconds, count)
    seconds, _ = timed(lambda: lfqcodec.decode_file(lfq, work / "dec.mkv", model=tok.model.path, overwrite=True,
                                                    **options), rounds)  # fmt: skip
    out["file_decode"] = summary(seconds, count)
    out["checks"] = {"file_tokens_equal_tokenizer_encode": same_tokens,
                     "torch_indices_equal_numpy": bool(np.array_equal(batch[0].cpu().numpy(), indices)),
                     "decoded_shape": list(decoded.shape)}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="a real clip (scaled to each size)")
    parser.add_argument("--sizes", default="256x256,1280x720", help="WxH frame sizes, comma-separated")
    parser.add_argument("--frames", type=int, default=17, help="frames per size (1 + 4k gives whole latent frames)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=None, help="model name or .safetensors path [default: lfq-base]")
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tokenizer_throughput.json")
    args = parser.parse_args()

    import torch

    import lfqcodec

    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    tok = lfqcodec.Tokenizer.load(args.model, args.device, args.precision, quality=args.quality)
    options = {"device": args.device, "precision": args.precision}
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "torch": {"version": torch.__version__, "threads": torch.get_num_threads(),
                  "cuda_device": torch.cuda.get_device_name(0) if tok.device.type == "cuda" else None},  # fmt: skip
        "model": {"name": tok.model.name, "sha256": tok.model.sha256, "quality": tok.quality, "bits": tok.bits},
        "device": str(tok.device),
        "mode": tok.codec.mode.describe(),
        "frames": args.frames,
        "rounds": args.rounds,
        "sizes": {},
    }
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.lower().split("x"))
        frames, source = read_frames(args.clip, args.frames, width, height)
        with tempfile.TemporaryDirectory() as work:
            result = measure(tok, frames, args.rounds, Path(work), options)
        record["sizes"][f"{width}x{height}"] = {"source": source, **result}
        line = ", ".join(f"{k} {v['fps']:.2f} fps" for k, v in result.items() if "fps" in v)
        print(f"{width}x{height}: {line}", file=sys.stderr, flush=True)
    record["load_average"] = {"before": load_before, "after": os.getloadavg()}
    record["seconds"] = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(args.out, file=sys.stderr)


if __name__ == "__main__":
    main()
