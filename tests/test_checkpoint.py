import pytest
import torch
from conftest import TINY_CONFIG, tiny_tokenizer

from lfqcodec.model.checkpoint import load_model, save_model
from lfqcodec.base.errors import ModelError


def test_save_load_gives_identical_outputs(tmp_path):
    model = tiny_tokenizer()
    path = tmp_path / "m.safetensors"
    sha = save_model(path, model, "tiny", dtype=torch.float32)
    loaded = load_model(path)
    assert loaded.config == TINY_CONFIG and loaded.name == "tiny" and loaded.sha256 == sha
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    bits = model.encode(video)
    assert torch.equal(loaded.tokenizer.encode(video), bits)
    assert torch.equal(loaded.tokenizer.decode(bits), model.decode(bits))


def test_fp16_file_and_stable_hash(tmp_path):
    model = tiny_tokenizer()
    a = save_model(tmp_path / "a.safetensors", model, "tiny")
    b = save_model(tmp_path / "b.safetensors", model, "tiny")
    assert a == b and load_model(tmp_path / "a.safetensors").model_id == bytes.fromhex(a)[:16]


def test_damaged_or_missing_model_is_rejected(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, tiny_tokenizer(), "tiny")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # inside the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="hash"):
        load_model(path)
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(ModelError, match="unknown model"):
        load_model("no-such-model")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError):
        load_model(tmp_path / "junk.safetensors")
