"""``.entropy`` files: a fitted context model bound to one tokenizer (``docs/FORMAT.md``,
"Entropy model files"). safetensors (no pickle) with tensors ``table`` (int32 ``B x 648``),
``weights`` (int32 ``B x B``), ``sigmoid`` (uint16 ``8193``), ``cost`` (uint16 ``8193 x 2``), in
``entropy-v2`` also the residual network's ``net.*`` arrays (:class:`~lfqcodec.entropy.net.ResidualNet`),
and metadata ``lfqcodec.format`` (``entropy-v1`` or ``entropy-v2``), ``lfqcodec.tokenizer_id`` (hex, 16
bytes), ``lfqcodec.name``, ``lfqcodec.id`` (hex of :attr:`FittedModel.model_id`), in v2
``lfqcodec.base_id`` (hex of :attr:`FittedModel.base_id`: the id of the tables alone, which files coded
with them name) and ``lfqcodec.trained_on`` (JSON list of clip names)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from ..base.atomic import atomic_output
from .coder import CONTEXTS, Z_MAX, FittedModel
from .net import ResidualNet
from ..base.errors import ModelError

FORMAT = "entropy-v1"  # tables only
FORMAT_NET = "entropy-v2"  # tables and the residual network of coder 2
SUFFIX = ".entropy"


def save_entropy_model(path: str | os.PathLike, model: FittedModel, trained_on: list[str] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically."""
    path = Path(path)
    metadata = {
        "lfqcodec.format": FORMAT if model.net is None else FORMAT_NET,
        "lfqcodec.tokenizer_id": model.tokenizer_id.hex(),
        "lfqcodec.name": model.name,
        "lfqcodec.id": model.model_id.hex(),
        "lfqcodec.trained_on": json.dumps(trained_on or []),
    }
    tensors = {"table": model.table.astype(np.int32), "weights": model.weights.astype(np.int32),
               "sigmoid": model.sigmoid.astype(np.uint16), "cost": model.cost.astype(np.uint16)}  # fmt: skip
    if model.net is not None:
        metadata["lfqcodec.base_id"] = model.base_id.hex()
        tensors.update({f"net.{name}": getattr(model.net, name) for name in ResidualNet.ARRAYS})
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
    if metadata.get("lfqcodec.format") not in (FORMAT, FORMAT_NET):
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
    net = None
    if metadata["lfqcodec.format"] == FORMAT_NET:
        try:
            net = ResidualNet(**{name: tensors[f"net.{name}"] for name in ResidualNet.ARRAYS})
        except KeyError as exc:
            raise ModelError(f"{path}: incomplete entropy model ({exc})") from None
        problem = net.problems()
        if problem or net.bits != bits:
            raise ModelError(f"{path}: residual network invalid ({problem or 'planes differ from the tables'})")
    model = FittedModel(table, weights, sigmoid, tokenizer_id, metadata.get("lfqcodec.name", path.stem), cost, net)
    if metadata.get("lfqcodec.id") != model.model_id.hex():
        raise ModelError(f"{path}: tables do not match their recorded id (file damaged?)")
    return model


RETIRED = "retired"  # a subfolder of entropy models that older files name; never chosen for encoding


def _candidates(models_dir: Path, retired: bool = False) -> list[Path]:
    folders = [models_dir, models_dir / RETIRED] if retired else [models_dir]
    return [path for folder in folders if folder.is_dir() for path in sorted(folder.glob(f"*{SUFFIX}"))]


def find_for_tokenizer(tokenizer_id: bytes, models_dir: Path) -> FittedModel | None:
    """The entropy model in ``models_dir`` fitted for this tokenizer, or ``None``."""
    for path in _candidates(models_dir):
        with contextlib.suppress(Exception):
            if _metadata(path).get("lfqcodec.tokenizer_id") == tokenizer_id.hex():
                return load_entropy_model(path)
    return None


def find_by_id(entropy_id: bytes, models_dir: Path) -> FittedModel:
    """The entropy model a 2.x file names (a v2 file also serves its tables' id, for files coded with
    them alone), also among the retired ones; :class:`ModelError` when it is not installed."""
    for path in _candidates(models_dir, retired=True):
        with contextlib.suppress(Exception):
            metadata = _metadata(path)
            if metadata.get("lfqcodec.id") == entropy_id.hex():
                return load_entropy_model(path)
            if metadata.get("lfqcodec.base_id") == entropy_id.hex():
                return load_entropy_model(path).base()
    raise ModelError(f"this file needs entropy model {entropy_id.hex()}, which is not installed in {models_dir} "
                     "(run lfqcodec train-entropy for its tokenizer, or install the .entropy file it was made with)")
