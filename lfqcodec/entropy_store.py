"""``.entropy`` files: a fitted context model bound to one tokenizer (``docs/FORMAT.md``,
"Entropy model files"). safetensors (no pickle) with tensors ``table`` (int32 ``B x 648``),
``weights`` (int32 ``B x B``), ``sigmoid`` (uint16 ``8193``), ``cost`` (uint16 ``8193 x 2``) and metadata ``lfqcodec.format``
(``entropy-v1``), ``lfqcodec.tokenizer_id`` (hex, 16 bytes), ``lfqcodec.name``, ``lfqcodec.id``
(hex of :attr:`FittedModel.model_id`) and ``lfqcodec.trained_on`` (JSON list of clip names)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from .atomic import atomic_output
from .entropy import CONTEXTS, Z_MAX, FittedModel
from .errors import ModelError

FORMAT = "entropy-v1"
SUFFIX = ".entropy"


def save_entropy_model(path: str | os.PathLike, model: FittedModel, trained_on: list[str] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically."""
    path = Path(path)
    metadata = {
        "lfqcodec.format": FORMAT,
        "lfqcodec.tokenizer_id": model.tokenizer_id.hex(),
        "lfqcodec.name": model.name,
        "lfqcodec.id": model.model_id.hex(),
        "lfqcodec.trained_on": json.dumps(trained_on or []),
    }
    tensors = {"table": model.table.astype(np.int32), "weights": model.weights.astype(np.int32),
               "sigmoid": model.sigmoid.astype(np.uint16), "cost": model.cost.astype(np.uint16)}  # fmt: skip
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _metadata(path: Path) -> dict:
    with safe_open(str(path), framework="np") as handle:
        return handle.metadata() or {}


def load_entropy_model(path: str | os.PathLike) -> FittedModel:
    """Load and check an ``.entropy`` file (shapes, ranges, recorded id)."""
    path = Path(path)
    try:
        metadata = _metadata(path)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read entropy model {path}: {exc}") from None
    if metadata.get("lfqcodec.format") != FORMAT:
        raise ModelError(f"{path} is not an lfqcodec entropy model (format {metadata.get('lfqcodec.format')!r})")
    try:
        table, weights, sigmoid, cost = tensors["table"], tensors["weights"], tensors["sigmoid"], tensors["cost"]
        tokenizer_id = bytes.fromhex(metadata["lfqcodec.tokenizer_id"])
    except (KeyError, ValueError) as exc:
        raise ModelError(f"{path}: incomplete entropy model ({exc})") from None
    bits = table.shape[0] if table.ndim == 2 else 0
    shapes_ok = (table.shape == (bits, CONTEXTS) and weights.shape == (bits, bits) and sigmoid.shape == (2 * Z_MAX + 1,)
                 and cost.shape == (2 * Z_MAX + 1, 2) and cost.dtype == np.uint16
                 and table.dtype == np.int32 and weights.dtype == np.int32 and sigmoid.dtype == np.uint16)  # fmt: skip
    if not (shapes_ok and 1 <= bits <= 62 and len(tokenizer_id) == 16):
        raise ModelError(f"{path}: entropy model tables have the wrong shapes or types")
    if np.abs(table).max() > 2 * Z_MAX or np.abs(weights).max() > Z_MAX or sigmoid.min() < 1 or np.triu(weights).any():
        raise ModelError(f"{path}: entropy model tables out of range")
    model = FittedModel(table, weights, sigmoid, tokenizer_id, metadata.get("lfqcodec.name", path.stem), cost)
    if metadata.get("lfqcodec.id") != model.model_id.hex():
        raise ModelError(f"{path}: tables do not match their recorded id (file damaged?)")
    return model


def _candidates(models_dir: Path) -> list[Path]:
    return sorted(models_dir.glob(f"*{SUFFIX}")) if models_dir.is_dir() else []


def find_for_tokenizer(tokenizer_id: bytes, models_dir: Path) -> FittedModel | None:
    """The entropy model in ``models_dir`` fitted for this tokenizer, or ``None``."""
    for path in _candidates(models_dir):
        with contextlib.suppress(Exception):
            if _metadata(path).get("lfqcodec.tokenizer_id") == tokenizer_id.hex():
                return load_entropy_model(path)
    return None


def find_by_id(entropy_id: bytes, models_dir: Path) -> FittedModel:
    """The entropy model a 2.0 file names; :class:`ModelError` when it is not installed."""
    for path in _candidates(models_dir):
        with contextlib.suppress(Exception):
            if _metadata(path).get("lfqcodec.id") == entropy_id.hex():
                return load_entropy_model(path)
    raise ModelError(f"this file needs entropy model {entropy_id.hex()}, which is not installed in {models_dir} "
                     "(run lfqcodec train-entropy for its tokenizer, or install the .entropy file it was made with)")
