"""Fit the context model's integer tables on token bits (``lfqcodec train-entropy``).

For each bit plane ``k``, a logistic regression of bit ``k`` on a one-hot of its context
(``P, N, C, D``, :mod:`lfqcodec.entropy.coder`) and on the signs of the token's lower bits ``j < k`` is
fitted by L-BFGS in float64 on the CPU (a few minutes for ~10^6 tokens); the logits (1/256 nat) are
then rounded to integers, and everything after that is integer arithmetic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..entropy.coder import CONTEXTS, Z_MAX, Z_SCALE, FittedModel, _State, sigmoid_table
from .heldout import EXCLUDED

log = logging.getLogger(__name__)


def chunk_samples(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contexts and bits of every token of a chunk (bool ``B x T' x gh x gw``), in coding order:
    ``(contexts uint16 n x B, token bits uint8 n x B)``. The contexts come from the coder's own
    state machine, so what is fitted is exactly what is coded."""
    b, latent, h, w = bits.shape
    zero = FittedModel(np.zeros((b, CONTEXTS), np.int32), np.zeros((b, b), np.int32), sigmoid_table(), bytes(16))
    state = _State(zero, (b, h, w))
    contexts, tokens = [], []
    for t in range(latent):
        frame = state.grid.split(bits[:, t].astype(np.uint8))
        for phase in (0, 1):
            contexts.append(np.zeros((frame[phase].shape[1], b), dtype=np.uint16))
        for k in range(b):
            for phase in (0, 1):
                contexts[-2 + phase][:, k] = state.contexts(k, phase)
                state.cur[phase][k] = frame[phase][k]
        tokens += [frame[0].T, frame[1].T]
        state.end_frame()
    return np.concatenate(contexts), np.concatenate(tokens)


def fit_plane(contexts: np.ndarray, tokens: np.ndarray, k: int, l2: float = 1.0, iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression for plane ``k``: (table float64 ``CONTEXTS``, weights float64 ``k``) in nats."""
    y = torch.from_numpy(tokens[:, k].astype(np.float64))
    index = torch.from_numpy(contexts[:, k].astype(np.int64))
    signs = torch.from_numpy(tokens[:, :k].astype(np.float64) * 2 - 1)
    counts = torch.bincount(index, minlength=CONTEXTS).double()
    ones = torch.bincount(index, weights=y, minlength=CONTEXTS)
    table = torch.log((ones + 0.5) / (counts - ones + 0.5)).requires_grad_()  # start from the counts
    weights = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([table, weights], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        z = table[index] + (signs @ weights if k else 0)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="sum")
        loss = loss + 0.5 * l2 * (table.square().sum() + weights.square().sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    return table.detach().numpy(), weights.detach().numpy()


def fit_model(chunks: Iterable[np.ndarray], tokenizer_id: bytes, name: str = "", max_tokens: int = 400_000,
              iterations: int = 25) -> FittedModel:
    """Fit a :class:`FittedModel` on chunks of token bits (bool ``B x T' x gh x gw`` each), on at most
    ``max_tokens`` tokens drawn at random (seed 0) from them."""
    contexts, tokens = [], []
    for bits in chunks:
        c, t = chunk_samples(bits)
        contexts.append(c)
        tokens.append(t)
    if not contexts:
        raise ValueError("no tokens to fit the entropy model on")
    contexts, tokens = np.concatenate(contexts), np.concatenate(tokens)
    if len(tokens) > max_tokens:
        keep = np.sort(np.random.default_rng(0).choice(len(tokens), max_tokens, replace=False))
        contexts, tokens = contexts[keep], tokens[keep]
    b = tokens.shape[1]
    table = np.zeros((b, CONTEXTS), dtype=np.int32)
    weights = np.zeros((b, b), dtype=np.int32)
    torch.set_num_threads(1)
    for k in range(b):
        t, w = fit_plane(contexts, tokens, k, iterations=iterations)
        table[k] = np.clip(np.round(t * Z_SCALE), -2 * Z_MAX, 2 * Z_MAX)
        weights[k, :k] = np.clip(np.round(w * Z_SCALE), -Z_MAX, Z_MAX)
        log.info("plane %d fitted on %d tokens", k, len(tokens))
    return FittedModel(table, weights, sigmoid_table(), tokenizer_id, name)


MEDIA = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".y4m", ".png", ".jpg", ".jpeg"}


def training_clips(sources: Iterable, held_out: Iterable[str] = EXCLUDED) -> list:
    """Media files under ``sources`` (folders or files), without the held-out clips (by stem)."""
    from pathlib import Path

    held = set(held_out)
    clips = []
    for source in map(Path, sources):
        files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        clips += [p for p in files if p.suffix.lower() in MEDIA and p.stem not in held]
    return clips


@dataclass(frozen=True)
class NetSettings:
    """How ``train-entropy`` fits coder 2's residual network (:mod:`lfqcodec.entropy.netfit`)."""

    hidden: int = 8
    epochs: int = 30
    samples_per_chunk: int = 120_000


def train_entropy(tokenizer, sources: Iterable, out=None, frames: int = 65, max_tokens: int = 400_000,
                  held_out: Iterable[str] = EXCLUDED, progress=None, net: NetSettings | None = NetSettings(),
                  keep_tables: bool = False):  # fmt: skip
    """Fit the entropy model for ``tokenizer`` (a :class:`~lfqcodec.model.checkpoint.LoadedModel`) on the
    first ``frames`` frames of each clip under ``sources`` and write it to ``out`` (default
    ``models/<tokenizer name>.entropy``): the tables, then (``net``) the residual network of coder 2.
    ``keep_tables``: take the tables of the model already at ``out`` instead of refitting them (files
    coded with those tables alone keep their model). Tokens are cached per tokenizer id (:mod:`lfqcodec.training.token_cache`). Returns the written path
    and the fitted model."""
    from pathlib import Path

    from ..model.checkpoint import MODELS_DIR
    from ..entropy.netfit import fit_net
    from ..entropy.store import load_entropy_model, save_entropy_model
    from ..base.errors import LfqError
    from .token_cache import clip_tokens

    out = Path(out) if out else MODELS_DIR / f"{tokenizer.name}.entropy"
    installed = None
    if keep_tables:
        if not out.is_file():
            raise LfqError(f"--keep-tables: no entropy model at {out} to take the tables from")
        installed = load_entropy_model(out)
        if installed.tokenizer_id != tokenizer.model_id:
            raise LfqError(f"--keep-tables: {out} was fitted for tokenizer {installed.tokenizer_id.hex()}, "
                           f"not {tokenizer.model_id.hex()}")  # fmt: skip

    clips = training_clips(sources, held_out)
    chunks, names = [], []
    for clip in clips:
        try:
            tokens = clip_tokens(clip, tokenizer, max_frames=frames)
        except LfqError as exc:
            log.warning("skipped %s: %s", clip, exc)
            continue
        if progress:
            progress(f"{clip.name}: {'skipped (too large)' if tokens is None else f'{len(tokens.chunks)} chunks'}")
        if tokens is not None:
            chunks += tokens.chunks
            names.append(clip.name)
    if not chunks:
        raise LfqError("no training clips found for train-entropy (pass --data)")
    if installed is not None:
        model = installed.base()
    else:
        model = fit_model(chunks, tokenizer.model_id, f"{tokenizer.name}-entropy", max_tokens=max_tokens)
    if net is not None:
        if progress:
            progress(f"fitting the residual network ({net.hidden} hidden units, {net.epochs} epochs)")
        qualities = tuple(tokenizer.config.quality_bits.values())
        model = fit_net(chunks, model, net.hidden, net.epochs, net.samples_per_chunk, qualities)
    save_entropy_model(out, model, names)
    return out, model
