"""The figures lfqcodec/model/tiling.py plans with, measured: decoder activations, the heap setting, the writers.

    python benchmarks/tiling_constants.py activations [--heap-limit]   # peak RSS growth of a 720p window
    python benchmarks/tiling_constants.py speed [--heap-limit]         # 720p decode fps of the network alone
    python benchmarks/tiling_constants.py writer CODEC                 # peak RSS of writing 12 4K frames (ffv1, libx264)

Run each in a fresh process (peak RSS is per process); ``--heap-limit`` calls ``tiling.limit_heap`` first.
``activations``: bytes per pixel per decoded frame beyond the carried pasts (ACTIVATION_BYTES);
``speed``: what the heap setting costs; ``writer``: WRITER_BYTES_PER_PIXEL.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from lfqcodec.model import tiling
from lfqcodec.io.videoio import mux_frames


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def activations(window: int = 2, grid: tuple[int, int] = (90, 160)) -> None:
    from lfqcodec.codec.chunks import Codec
    from lfqcodec.model.checkpoint import load_model

    codec = Codec(load_model(), torch.device("cpu"), window=window, memory_budget=0)
    halo, state = tiling.probe_decoder(codec.tokenizer.decoder)
    bits = np.zeros((16, 1 + window, *grid), dtype=bool)
    base = _peak_bytes()
    list(codec.decode_chunk(bits, 1 + 4 * window, grid[0] * 8, grid[1] * 8))
    pixels = grid[0] * grid[1] * 64
    per_frame = (_peak_bytes() - base - state * grid[0] * grid[1]) / pixels / (4 * window)
    print(f"halo {halo} latents, pasts {state} B per latent ({state / 64:.0f} B/px); process before "
          f"{base >> 20} MiB; activations {per_frame:.0f} B per pixel and frame")


def speed(grid: tuple[int, int] = (90, 160)) -> None:
    from lfqcodec.codec.chunks import Codec
    from lfqcodec.model.checkpoint import load_model

    codec = Codec(load_model(), torch.device("cpu"), window=2, memory_budget=0)
    bits = np.random.default_rng(0).random((16, 5, *grid)) > 0.5
    list(codec.decode_chunk(bits[:, :2], 5, grid[0] * 8, grid[1] * 8))  # warm-up
    started = time.time()
    frames = sum(len(f) for f in codec.decode_chunk(bits, 17, grid[0] * 8, grid[1] * 8))
    print(f"{frames / (time.time() - started):.3f} fps")


def writer(codec_name: str) -> None:
    import av

    frame = np.random.default_rng(0).integers(0, 255, (2160, 3840, 3), dtype=np.uint8)
    base = _peak_bytes()
    with av.open(f"/tmp/tiling-constants.{'mkv' if codec_name == 'ffv1' else 'mp4'}", "w") as container:
        stream = container.add_stream(codec_name, rate=25, options={"crf": "10"} if codec_name == "libx264" else {})
        stream.width, stream.height = 3840, 2160
        stream.pix_fmt = "bgr0" if codec_name == "ffv1" else "yuv420p"
        mux_frames(container, stream, [frame] * 12)
    grown = _peak_bytes() - base
    print(f"{codec_name}: {grown >> 20} MiB at 3840x2160, {grown / (3840 * 2160):.0f} B per pixel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["activations", "speed", "writer"])
    parser.add_argument("codec", nargs="?", default="ffv1")
    parser.add_argument("--heap-limit", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.heap_limit:
        tiling.limit_heap()
    {"activations": activations, "speed": speed, "writer": lambda: writer(args.codec)}[args.what]()


if __name__ == "__main__":
    main()
