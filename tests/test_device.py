"""TF32 is off on every path that loads a model or picks a device (lfqcodec.model.device)."""

from __future__ import annotations

import pytest
import torch

from lfqcodec.model import device as device_module
from lfqcodec.model.checkpoint import load_model
from lfqcodec.model.device import deterministic, select_device, tf32_enabled
from lfqcodec.base.errors import LfqError


@pytest.fixture
def tf32_on():
    """Switch TF32 on as a user's own code (or torch's cuDNN default) might, and restore after."""

    def enable() -> None:
        if device_module._has_precision_api():
            torch.backends.cuda.matmul.fp32_precision = "tf32"
            torch.backends.cudnn.conv.fp32_precision = "tf32"
            torch.backends.cudnn.rnn.fp32_precision = "tf32"
        else:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    enable()
    assert tf32_enabled()
    yield
    deterministic()


def test_loading_a_model_switches_tf32_off(tf32_on, tiny_model):
    load_model(tiny_model)
    assert not tf32_enabled()


def test_choosing_a_device_switches_tf32_off(tf32_on):
    assert select_device("cpu") == torch.device("cpu")
    assert not tf32_enabled()


def test_codec_paths_switch_tf32_off(tf32_on, tiny_model, odd_clip, tmp_path):
    import lfqcodec

    lfqcodec.encode_file(odd_clip, tmp_path / "a.lfq", model=tiny_model, device="cpu", progress=False)
    assert not tf32_enabled()


def test_bad_device_names_are_one_line_errors():
    with pytest.raises(LfqError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LfqError, match="no CUDA device"):
            select_device("cuda")
