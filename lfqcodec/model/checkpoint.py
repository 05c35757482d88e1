"""Model files: safetensors weights + the config + a content hash, loaded without pickle.

Metadata keys (all strings): ``lfqcodec.format`` (``"model-v1"``), ``lfqcodec.name``,
``lfqcodec.config`` (JSON of :class:`~lfqcodec.model.config.TokenizerConfig`) and ``lfqcodec.sha256``
(hash of the tensors: names, dtypes, shapes and bytes, in sorted name order). A ``.lfq`` file
names the model by name and the first 16 bytes of that hash, so decoding with other weights is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ..base.atomic import atomic_output
from .config import TokenizerConfig
from .device import deterministic
from ..base.errors import LfqError, ModelError
from .tokenizer import TokenizerNet

MODEL_FORMAT = "model-v1"


def _models_dir() -> Path:
    """Where shipped models are: ``$LFQCODEC_MODELS``, else ``models/`` of a source checkout (an
    editable install), else ``<prefix>/share/lfqcodec/models`` where a wheel install puts them."""
    if os.environ.get("LFQCODEC_MODELS"):
        return Path(os.environ["LFQCODEC_MODELS"])
    checkout = Path(__file__).resolve().parents[2] / "models"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "lfqcodec" / "models"


MODELS_DIR = _models_dir()
DEFAULT_MODEL = "lfq-base"


@dataclass(frozen=True)
class LoadedModel:
    name: str
    sha256: str  # hex digest of the weights
    config: TokenizerConfig
    tokenizer: TokenizerNet
    path: Path | None = None  # the weights file it was loaded from (its folder may hold companion files)

    @property
    def model_id(self) -> bytes:
        """The 16-byte identity stored in ``.lfq`` headers."""
        return bytes.fromhex(self.sha256)[:16]


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_model(path: str | os.PathLike, tokenizer: TokenizerNet, name: str, dtype: torch.dtype = torch.float16) -> str:
    """Write ``tokenizer``'s weights (cast to ``dtype``) to ``path`` atomically; returns the hash."""
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tokenizer.state_dict().items()}
    sha = weights_sha256(state)
    metadata = {
        "lfqcodec.format": MODEL_FORMAT,
        "lfqcodec.name": name,
        "lfqcodec.config": tokenizer.cfg.to_json(),
        "lfqcodec.sha256": sha,
    }
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return sha


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """A model name from ``models/`` (e.g. ``lfq-base``) or a path to a ``.safetensors`` file."""
    model = DEFAULT_MODEL if model is None else model
    candidate = Path(model)
    if candidate.suffix == ".safetensors" or candidate.exists():
        if not candidate.is_file():
            raise ModelError(f"model file not found: {candidate}")
        return candidate
    shipped = MODELS_DIR / f"{model}.safetensors"
    if not shipped.is_file():
        available = sorted(p.stem for p in MODELS_DIR.glob("*.safetensors")) if MODELS_DIR.is_dir() else []
        raise ModelError(f"unknown model {str(model)!r} (available: {', '.join(available) or 'none'})")
    return shipped


def load_model(
    model: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    verify: bool = True,
) -> LoadedModel:
    """Load a model by name or path, check its hash, and return it in eval mode on ``device``
    (with TF32 switched off: :func:`lfqcodec.model.device.deterministic`)."""
    deterministic()
    path = resolve_model_path(model)
    try:
        with open(path, "rb"):  # safetensors reports an unreadable file as "No such file"
            pass
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read model file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if metadata.get("lfqcodec.format") != MODEL_FORMAT:
        raise ModelError(f"{path} is not an lfqcodec model file (format {metadata.get('lfqcodec.format')!r})")
    try:
        config = TokenizerConfig.from_dict(json.loads(metadata["lfqcodec.config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{path}: bad model config: {exc}") from None
    sha = weights_sha256(state)
    if verify and sha != metadata.get("lfqcodec.sha256"):
        raise ModelError(f"{path}: weights do not match their recorded hash (file damaged?)")
    tokenizer = TokenizerNet(config)
    try:
        tokenizer.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the config: {str(exc).splitlines()[0]}") from None
    tokenizer.to(device=device, dtype=dtype).eval()
    return LoadedModel(metadata.get("lfqcodec.name", path.stem), sha, config, tokenizer, Path(path))


def installed_config(model_id: bytes, models_dir: Path | None = None) -> TokenizerConfig | None:
    """The config of the installed model whose id is ``model_id`` (its file's metadata only), or None."""
    folder = MODELS_DIR if models_dir is None else models_dir
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            if bytes.fromhex(metadata.get("lfqcodec.sha256", ""))[:16] == model_id:
                return TokenizerConfig.from_dict(json.loads(metadata["lfqcodec.config"]))
        except (SafetensorError, OSError, ValueError, KeyError, TypeError):
            continue
    return None


# Models this package no longer ships, by the 16-byte id their files carry: what they were and which
# commit of this repository (with the model in its models/) reads their files.
RETIRED_MODELS: dict[str, str] = {
    "86ca7c0e1b8fcbf13c755d9c1301753f": "lfq-base v5, shipped 2026-11-24; read by lfqcodec at commit 2c2f48f",
}


def retired_model_note(model_id: bytes) -> str:
    """``"; it is <what it was>"`` for a model id this package shipped before, else ``""``."""
    note = RETIRED_MODELS.get(model_id.hex())
    return f"; it is {note} (git checkout that commit, or pass --model with its weights)" if note else ""


RUN_STATE_KEYS = ("model", "optimizer", "ema", "step", "best", "model_config")


def load_run_state(path: str | os.PathLike) -> dict:
    """A training run's ``state.pt`` (``torch.load`` with ``weights_only``: no code is run), with
    its keys and model config checked; a damaged file is a one-line :class:`LfqError`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(key in state for key in RUN_STATE_KEYS):
            raise ValueError("not a training state (keys missing)")
        TokenizerConfig.from_dict(json.loads(state["model_config"]))
    except Exception as exc:  # torch.load raises many types for a damaged file
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc) else type(exc).__name__
        raise LfqError(
            f"cannot resume from {path}, damaged or not a run state ({reason}); move it away to start afresh"
        ) from None
    return state
