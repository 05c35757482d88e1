"""lfqcodec: a video codec built on a causal LFQ tokenizer (MAGVIT-v2 style)."""

__version__ = "0.1.0"

from .api import (
    Codec,
    DecodeReport,
    EncodeReport,
    Tokens,
    decode_file,
    decode_frames,
    encode_file,
    encode_frames,
    export_tokens,
    read_info,
    read_tokens,
)
from .config import TokenizerConfig
from .errors import FormatError, LfqError, ModelError
from .tokenize import TokenizeReport, tokenize_dataset

__all__ = [
    "Codec", "DecodeReport", "EncodeReport", "FormatError", "LfqError", "ModelError", "TokenizerConfig",
    "Tokens", "TokenizeReport", "decode_file", "decode_frames", "encode_file", "encode_frames", "export_tokens", "read_info", "read_tokens", "tokenize_dataset", "__version__",
]  # fmt: skip
