"""Format 2.0 end to end with the CLI: train-entropy, encode with the context model, the same tokens
as a 1.1 file, the fallback without an entropy model."""

import numpy as np
from click.testing import CliRunner
from conftest import moving_pattern, write_clip

import lfqcodec
from lfqcodec import api
from lfqcodec.codec import decoding
from lfqcodec.cli.commands import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_train_entropy_then_encode_decode(tmp_path, tiny_model, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    clip = write_clip(data / "pattern.mkv", moving_pattern(17, 64, 96, seed=3))
    models = tmp_path / "models"
    models.mkdir()
    result = run("train-entropy", "--model", tiny_model, "--data", data, "--out", models / "tiny.entropy", "-q")
    assert result.exit_code == 0, result.output
    assert (models / "tiny.entropy").is_file() and "entropy model" in result.output

    old = tmp_path / "old.lfq"
    lfqcodec.encode_file(clip, old, model=tiny_model, gop=9, version=(1, 1))
    plain = tmp_path / "plain.lfq"
    result = run("encode", clip, plain, "--model", tiny_model, "--gop", "9", "-q")
    assert result.exit_code == 0 and "warning: no entropy model" in result.output  # fallback: zstd in 2.0

    monkeypatch.setattr(api, "MODELS_DIR", models)
    monkeypatch.setattr(decoding, "MODELS_DIR", models)
    new = tmp_path / "new.lfq"
    result = run("encode", clip, new, "--model", tiny_model, "--gop", "9", "-q")
    assert result.exit_code == 0 and "warning" not in result.output
    info = lfqcodec.read_info(new)
    assert info["format_version"] == "2.1" and info["preset"] == "medium" and info["entropy_model"] != "0" * 32
    assert lfqcodec.read_info(old)["format_version"] == "1.1"
    for path in (plain, new):  # the same tokens whatever the coder
        assert np.array_equal(lfqcodec.read_tokens(path).indices, lfqcodec.read_tokens(old).indices)
    text = run("info", new).output
    assert "coder:" in text and "bits/token" in text
    for name, path in (("old", old), ("new", new)):
        assert run("decode", path, tmp_path / f"{name}.y4m", "--model", tiny_model, "-q").exit_code == 0
    assert (tmp_path / "old.y4m").read_bytes() == (tmp_path / "new.y4m").read_bytes()
    monkeypatch.setattr(decoding, "MODELS_DIR", tmp_path)  # the entropy model is gone
    if info["context_coded_chunks"]:
        result = run("decode", new, tmp_path / "x.y4m", "--model", tiny_model, "-q")
        assert result.exit_code == 1 and "needs entropy model" in result.output


def test_train_entropy_network_options(tmp_path, tiny_model):
    """--no-network writes tables alone (2.0 files); --keep-tables then adds a network to them, and the
    tables' id still finds the new file (2.0 files made before keep decoding)."""
    data = tmp_path / "data"
    data.mkdir()
    write_clip(data / "pattern.mkv", moving_pattern(17, 64, 96, seed=4))
    out = tmp_path / "tiny.entropy"
    result = run("train-entropy", "--model", tiny_model, "--data", data, "--out", out, "--keep-tables", "-q")
    assert result.exit_code == 1 and "no entropy model at" in result.output
    assert run("train-entropy", "--model", tiny_model, "--data", data, "--out", out, "--no-network", "-q").exit_code == 0
    from lfqcodec.entropy.store import find_by_id, load_entropy_model

    tables = load_entropy_model(out)
    assert tables.net is None
    result = run("train-entropy", "--model", tiny_model, "--data", data, "--out", out, "--keep-tables", "--hidden", "4",
                 "--epochs", "1", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    full = load_entropy_model(out)
    assert full.net is not None and full.base_id == tables.model_id and full.model_id != tables.model_id
    assert find_by_id(tables.model_id, tmp_path).net is None
