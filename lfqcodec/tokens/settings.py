"""The settings that decide a token dataset, checked before any worker starts."""

from __future__ import annotations

import json
from dataclasses import dataclass

from safetensors import safe_open

from ..codec.chunks import DEFAULT_GOP, DEFAULT_WINDOW
from ..model.checkpoint import MODEL_FORMAT, resolve_model_path
from ..model.config import TokenizerConfig
from ..base.errors import LfqError, ModelError
from ..codec.scenecut import DEFAULT_THRESHOLD as DEFAULT_SCENECUT


@dataclass(frozen=True)
class TokenSettings:
    """How every clip is encoded (as ``lfqcodec encode`` with the same options) and cut into rows."""

    model: str | None = None  # name in models/ or a .safetensors path; None: lfq-base
    quality: str = "medium"  # operating point: bits kept per token
    gop: int = DEFAULT_GOP  # frames per independently coded chunk (1 + 4k)
    scenecut: float = DEFAULT_SCENECUT  # luma change that starts a new chunk; 0 = off
    search_steps: int = 0  # encoder-side bit search steps per chunk (slow)
    clip_frames: int | None = None  # one row per window of this many frames; None: one row per clip
    sub_bits: int | None = None  # also store factorized sub-tokens of this many bits
    window: int = DEFAULT_WINDOW  # latent frames per network step: memory vs. speed, never the tokens


def model_record(settings: TokenSettings) -> dict:
    """Check ``settings`` against the model's recorded config (read from the file's header, without
    loading the weights) and return ``{"model": {...}, "settings": {...}}``: the settings part is
    what decides the tokens, so it goes into every shard's fingerprint."""
    path = resolve_model_path(settings.model)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        if meta.get("lfqcodec.format") != MODEL_FORMAT:
            raise ModelError(f"{path} is not an lfqcodec model file")
        cfg = TokenizerConfig.from_dict(json.loads(meta["lfqcodec.config"]))
        sha = meta["lfqcodec.sha256"]
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable header is the same error to the user
        raise ModelError(f"cannot read model file {path}: {exc}") from None
    if settings.quality not in cfg.quality_bits:
        raise LfqError(f"unknown quality {settings.quality!r} (this model has {', '.join(cfg.quality_bits)})")
    bits = cfg.quality_bits[settings.quality]
    if settings.gop < 1 or (settings.gop - 1) % cfg.temporal_factor:
        raise LfqError(f"--gop must be 1 + {cfg.temporal_factor}k frames (e.g. 17, 33, 65), got {settings.gop}")
    if settings.scenecut < 0:
        raise LfqError(f"--scenecut must be >= 0, got {settings.scenecut}")
    if settings.search_steps < 0:
        raise LfqError(f"--search must be >= 0, got {settings.search_steps}")
    if settings.clip_frames is not None and settings.clip_frames < 1:
        raise LfqError(f"--clip-frames must be >= 1, got {settings.clip_frames}")
    if settings.sub_bits is not None and not 1 <= settings.sub_bits <= bits:
        raise LfqError(f"sub-token size {settings.sub_bits} outside 1..{bits} (quality {settings.quality})")
    if settings.window < 1:
        raise LfqError(f"--window must be >= 1, got {settings.window}")
    return {
        "model": {"name": meta.get("lfqcodec.name", path.stem), "sha256": sha, "id": sha[:32], "file": str(path)},
        "settings": {
            "model_sha256": sha, "quality": settings.quality, "bits": bits, "gop": settings.gop,
            "scenecut": settings.scenecut, "search_steps": settings.search_steps,
            "clip_frames": settings.clip_frames, "sub_bits": settings.sub_bits,
        },
    }  # fmt: skip
