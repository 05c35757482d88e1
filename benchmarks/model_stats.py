"""Parameter count and FLOPs per pixel of a model's encoder and decoder (torch's FLOP counter).

    python benchmarks/model_stats.py [--model lfq-base] [--frames 17] [--size 256]
        [--drop-decoder-block 1.1 --refine-blocks 3,1 --frame-split]   # the architecture a grown warm start builds

FLOPs are counted for one chunk of ``--frames`` frames at ``--size`` x ``--size`` and divided by
the number of pixels (frames x height x width); one multiply-add counts as 2 FLOPs.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from lfqcodec.model.checkpoint import load_model
from lfqcodec.training.surgery import grown_config
from lfqcodec.model.tokenizer import TokenizerNet


def model_stats(model: str | None, frames: int, size: int, grow: dict | None = None) -> dict:
    tokenizer = load_model(model).tokenizer
    if grow:  # counts only: the grown parts' weights do not change FLOPs or parameter counts
        tokenizer = TokenizerNet(grown_config(tokenizer.cfg, **grow)).eval()
    video = torch.zeros(1, 3, frames, size, size)
    with FlopCounterMode(display=False) as counter:
        bits = tokenizer.encode(video)
    encode = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        tokenizer.decode(bits)
    decode = counter.get_total_flops()
    pixels = frames * size * size
    return {
        "model": model or "lfq-base",
        "encoder_parameters": sum(p.numel() for p in tokenizer.encoder.parameters()),
        "decoder_parameters": sum(p.numel() for p in tokenizer.decoder.parameters()),
        "encode_flops_per_pixel": encode / pixels,
        "decode_flops_per_pixel": decode / pixels,
        "measured_on": f"{frames} frames of {size}x{size}",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--drop-decoder-block", action="append", default=[], metavar="LEVEL.BLOCK")
    parser.add_argument("--refine-blocks", default=None, metavar="N,N")
    parser.add_argument("--frame-split", action="store_true")
    args = parser.parse_args()
    grow = {"drop_decoder_blocks": tuple(tuple(int(n) for n in d.split(".")) for d in args.drop_decoder_block),
            "refine_blocks": tuple(int(n) for n in args.refine_blocks.split(",")) if args.refine_blocks else None,
            "frame_split": True if args.frame_split else None}  # fmt: skip
    grown = any(v for v in grow.values())
    print(json.dumps(model_stats(args.model, args.frames, args.size, grow if grown else None), indent=2))
