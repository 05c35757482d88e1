"""The clips that measure the codec, and the clips no training command may read.

The project judges its models on clips that neither trained them nor chose among them. This module is
the one place that names them, so that training (``lfqcodec train``, ``train-entropy``,
``calibrate-int8``, ``scripts/pack_training_data.py``) and measuring (the benchmarks, the GPU bench
pack) agree:

- :data:`MEASURING`: the four held-out clips every target is met on (armwrestling, kitten, aquarium,
  city), with where ``scripts/fetch_data.sh`` and the shared data folder keep them;
- :data:`SELECTING`: the validation clips that choose a training run's best weights (bikes, carphone);
- :data:`RETIRED`: vtest, which tokenizer versions 1-5 trained on: it measures nothing any more, and
  stays out of training so that later models are not fitted on it further.

Clips are matched by file stem (``kitten`` matches ``kitten.mp4`` and ``kitten.mkv``).
"""

from __future__ import annotations

import os
from pathlib import Path

# The same variables as scripts/fetch_data.sh and benchmarks/model_card.sh:
DATA_CACHE = Path(os.environ.get("LFQ_DATA", Path.home() / ".cache/lfqcodec/data"))  # fetch_data.sh fills it
CHECKOUT = Path(__file__).resolve().parents[2]  # lfqcodec/training/heldout.py -> the repository
SHARED_DATA = Path(os.environ.get("LFQ_SHARED_DATA", CHECKOUT.parent / "shared/data"))  # beside the checkout

MEASURING: dict[str, tuple[str, str]] = {  # stem: (root, path under it); root "shared" or "cache"
    "armwrestling": ("shared", "validation/armwrestling.mp4"),
    "kitten": ("cache", "video/kitten.mp4"),
    "aquarium": ("cache", "video/aquarium.mp4"),
    "city": ("cache", "heldout/city.mpg"),  # in heldout/, a folder no training default reads
}
SELECTING = ("bikes", "carphone", "carphone_pristine")
RETIRED = ("vtest",)
EXCLUDED: frozenset[str] = frozenset((*MEASURING, *SELECTING, *RETIRED))


def is_excluded(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a clip that no training command may read (by stem)."""
    return Path(path).stem in EXCLUDED


def measuring_clips(shared_data: Path = SHARED_DATA, data_cache: Path = DATA_CACHE) -> list[Path]:
    """The four held-out clips' paths, in the order every benchmark reports them."""
    roots = {"shared": Path(shared_data), "cache": Path(data_cache)}
    return [roots[root] / relative for root, relative in MEASURING.values()]
