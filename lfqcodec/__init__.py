"""lfqcodec: a video codec built on a causal LFQ tokenizer (MAGVIT-v2 style).

The public API is imported on first use (PEP 562), so ``import lfqcodec`` and the training modules work
where the codec's I/O libraries (PyAV, zstandard) are absent, as on a GPU training machine.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Codec": "codec.chunks", "DecodeReport": "api", "EncodeReport": "api", "Tokens": "api", "decode_file": "api",
    "decode_frames": "api", "encode_file": "api", "encode_frames": "api", "export_tokens": "api", "read_info": "api",
    "read_tokens": "api", "TokenizerConfig": "model.config", "FormatError": "base.errors", "LfqError": "base.errors",
    "ModelError": "base.errors", "TokenizeReport": "tokens.tokenize", "tokenize_dataset": "tokens.tokenize", "Tokenizer": "tokens.tokenizer_api",
    "TokenClip": "tokens.tokenizer_api",
}  # fmt: skip

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
