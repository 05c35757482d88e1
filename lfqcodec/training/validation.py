"""Validation during training: the first frames of held-out clips, and PSNR, MS-SSIM and
payload bits per pixel for every quality of a tokenizer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..format.bitpack import compressed_size
from .data import to_model_range
from ..base.metrics import ms_ssim, psnr
from ..model.tokenizer import TokenizerNet


def load_validation(paths: list[Path], frames: int, max_side: int = 640) -> list[tuple[str, torch.Tensor]]:
    """First ``frames`` frames of each clip, centre-cropped to multiples of 8 and at most ``max_side``."""
    from ..io.videoio import read_video_frames

    clips = []
    for path in paths:
        raw = []
        for frame in read_video_frames(path):
            raw.append(frame)
            if len(raw) == frames:
                break
        arr = np.stack(raw)
        h, w = (min(max_side, s) // 16 * 16 for s in arr.shape[1:3])
        y0, x0 = (arr.shape[1] - h) // 2, (arr.shape[2] - w) // 2
        clips.append((path.stem, torch.from_numpy(np.ascontiguousarray(arr[:, y0 : y0 + h, x0 : x0 + w]))))
    return clips


def _payload_bytes(bits: np.ndarray) -> float:
    """Packed + zstd bytes of ``bits``; NaN where zstandard is not installed (a GPU training machine)."""
    try:
        return compressed_size(bits)
    except ImportError:
        return math.nan


@torch.no_grad()
def validate(tokenizer: TokenizerNet, clips: list[tuple[str, torch.Tensor]], device: torch.device) -> dict:
    """PSNR / MS-SSIM / payload bits per pixel (packed + zstd) per quality, averaged over clips."""
    tokenizer.eval()
    rows: dict[str, list[dict]] = {quality: [] for quality in tokenizer.cfg.quality_bits}
    usage = []
    for name, frames in clips:
        video = to_model_range(frames).transpose(0, 1)[None].to(device)
        bits = tokenizer.encode(video)
        usage.append(bits.float().mean(dim=(0, 2, 3, 4)).cpu())
        ref = frames.permute(0, 3, 1, 2).float()
        for quality, keep in tokenizer.cfg.quality_bits.items():
            recon = tokenizer.decode(bits[:, :keep])
            out = ((recon.clamp(-1, 1) + 1) * 127.5).round()[0].transpose(0, 1).cpu()
            payload = _payload_bytes(bits[0, :keep].cpu().numpy())
            rows[quality].append(
                {"clip": name, "psnr": psnr(ref, out), "ms_ssim": ms_ssim(ref, out), "bpp": payload * 8 / frames[..., 0].numel()}
            )
    results: dict = {}
    for quality, quality_rows in rows.items():
        results[quality] = {key: float(np.mean([r[key] for r in quality_rows])) for key in ("psnr", "ms_ssim", "bpp")}
        results[quality]["clips"] = quality_rows
    mean_usage = torch.stack(usage).mean(0)
    results["bit_usage"] = [round(float(u), 3) for u in mean_usage]
    return results
