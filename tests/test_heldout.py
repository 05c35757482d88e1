"""The held-out clips: one list, and every training command keeps them out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import moving_pattern, write_clip

from lfqcodec.training import heldout
from lfqcodec.cli.commands import main
from lfqcodec.training.data import prepare_cache
from lfqcodec.training.entropy_fit import training_clips


def test_the_measuring_clips_are_four_and_excluded_from_training():
    clips = heldout.measuring_clips(Path("/shared"), Path("/cache"))
    assert [c.stem for c in clips] == ["armwrestling", "kitten", "aquarium", "city"]
    assert clips[0] == Path("/shared/validation/armwrestling.mp4") and clips[3] == Path("/cache/heldout/city.mpg")
    assert all(heldout.is_excluded(c) for c in clips)
    assert heldout.is_excluded("bikes.mp4") and heldout.is_excluded("/x/vtest.avi") and heldout.is_excluded("kitten.mkv")
    assert not heldout.is_excluded("cockatoo.mp4")


def test_shared_data_is_beside_the_checkout():
    """As scripts/fetch_data.sh and benchmarks/model_card.sh have it: ../shared/data from the repository
    (the package's move into subpackages once made it the repository's own shared/data)."""
    repository = Path(__file__).resolve().parents[1]
    assert heldout.CHECKOUT == repository
    if "LFQ_SHARED_DATA" not in os.environ:
        assert heldout.SHARED_DATA == repository.parent / "shared" / "data"


@pytest.fixture
def material(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for i, name in enumerate(("kitten.mkv", "cockatoo.mkv", "city.mkv")):
        write_clip(folder / name, moving_pattern(5, 32, 32, seed=i))
    return folder


def test_train_entropy_and_calibration_skip_held_out_clips(material):
    assert [p.name for p in training_clips([material])] == ["cockatoo.mkv"]


def test_prepare_cache_excludes_by_name_or_stem(material, tmp_path):
    cached = prepare_cache([material], tmp_path / "cache", exclude={"kitten.mkv", "city"})
    assert [p.name for p in cached] == ["video-cockatoo.npy"]


@pytest.mark.parametrize(("flags", "kept_out"), [((), True), (("--train-on-held-out",), False)])
def test_train_keeps_held_out_clips_out_unless_asked(material, tmp_path, monkeypatch, flags, kept_out):
    import lfqcodec.training.train

    seen = {}
    monkeypatch.setattr(lfqcodec.training.train, "train", lambda *args, **kwargs: seen.update(kwargs))
    val = write_clip(tmp_path / "val.mkv", moving_pattern(5, 32, 32, seed=7))
    result = CliRunner().invoke(main, ["train", "--data", str(material), "--val", str(val), "--out",
                                       str(tmp_path / "run"), "--exclude", "extra.mp4", *flags])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "extra.mp4" in seen["exclude"]
    assert heldout.EXCLUDED.issubset(seen["exclude"]) is kept_out
