"""Tiled decoding (lfqcodec.model.tiling): the pixels of whole-frame decoding, in memory bounded by a budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lfqcodec import api
from lfqcodec.model import tiling
from lfqcodec.model.checkpoint import load_model
from lfqcodec.cli.commands import main
from lfqcodec.model.tiling import DEFAULT_MEMORY_BUDGET, TilePlan, plan_tiles, probe_decoder
from lfqcodec.model.tokenizer import TokenizerNet

from conftest import TINY_CONFIG


def _decode(codec: api.Codec, bits: np.ndarray, frames: int, height: int, width: int) -> np.ndarray:
    return np.concatenate(list(codec.decode_chunk(bits, frames, height, width)))


@pytest.mark.parametrize("spill", [False, True])
def test_tiled_decoding_gives_the_whole_frame_pixels(tiny_model, spill):
    model = load_model(tiny_model)
    rng = np.random.default_rng(3)
    bits = rng.random((12, 5, 9, 11)) > 0.5  # 5 latent frames: the first, then windows that carry the past
    height, width = 9 * 8 - 5, 11 * 8 - 3  # the last row and column of latents are cropped
    whole = _decode(api.Codec(model, torch.device("cpu"), window=2, memory_budget=0), bits, 16, height, width)
    tiled_codec = api.Codec(model, torch.device("cpu"), window=2, memory_budget=1)
    halo, _ = probe_decoder(tiled_codec.tokenizer.decoder)
    plan = TilePlan((9, 11), (4, 3), halo, spill)
    tiled_codec.tile_plan = lambda h, w: plan
    tiled = _decode(tiled_codec, bits, 16, height, width)
    assert tiled.shape == whole.shape == (16, height, width, 3)
    difference = np.abs(tiled.astype(int) - whole.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3  # summation order only


def test_a_smaller_halo_changes_the_pixels(tiny_model):
    """The halo is not larger than it needs to be by accident: context is really used near tile edges."""
    model = load_model(tiny_model)
    bits = np.random.default_rng(4).random((12, 3, 10, 10)) > 0.5
    whole = _decode(api.Codec(model, torch.device("cpu"), memory_budget=0), bits, 9, 80, 80)
    codec = api.Codec(model, torch.device("cpu"), memory_budget=1)
    codec.tile_plan = lambda h, w: TilePlan((10, 10), (5, 5), 0, False)
    assert not np.array_equal(_decode(codec, bits, 9, 80, 80), whole)


def test_probe_measures_the_receptive_radius_and_the_carried_state():
    cfg = dataclasses.replace(TINY_CONFIG, frame_split=True, refine_blocks=(2, 1))
    decoder = TokenizerNet(cfg).decoder.eval()
    halo, state = probe_decoder(decoder)
    # 3x3 convolutions, one latent each at 1/8 (inp, 1 block), half at 1/4 (1 block, out, the refiner's 2
    # blocks), a quarter at 1/2 (the refiner's last block and out): 3 + 3.5 + 0.75 = 7.25 -> 8, plus 1
    assert halo == 9
    assert state > 0 and all(layer.past is None for layer in decoder.modules() if hasattr(layer, "past"))


def test_plan_fits_the_budget_and_covers_the_grid():
    assert plan_tiles((20, 30), 8, 8, 1000, 5, budget=1 << 40) is None  # fits whole: the untiled path
    small_state = plan_tiles((135, 240), 4, 8, 1000, 15, budget=400 << 20)
    assert small_state is not None and not small_state.spill  # the pasts stay in memory where they fit
    plan = plan_tiles((135, 240), 4, 8, 26880, 15, budget=800 << 20)  # 1080p, the shipped model's figures
    assert plan is not None
    covered = np.zeros((135, 240), dtype=int)
    for tile in plan.tiles:
        y0, y1, x0, x1 = tile.core
        covered[y0:y1, x0:x1] += 1
        py0, py1, px0, px1 = tile.padded
        assert py0 == max(0, y0 - 15) and px1 == min(240, x1 + 15)
    assert (covered == 1).all()
    uhd = plan_tiles((270, 480), 4, 8, 26880, 15, budget=DEFAULT_MEMORY_BUDGET)  # 4K: the pasts alone are 3.2 GiB
    assert uhd is not None and uhd.spill and len(uhd.tiles) > 1


def test_decode_max_memory_option(tmp_path, tiny_model, odd_clip, monkeypatch):
    out = tmp_path / "a.lfq"
    runner = CliRunner()
    assert runner.invoke(main, ["encode", str(odd_clip), str(out), "--model", str(tiny_model), "-q"]).exit_code == 0
    res = runner.invoke(main, ["decode", str(out), str(tmp_path / "x.y4m"), "--model", str(tiny_model), "--max-memory", "300M"])
    assert res.exit_code == 1 and "--max-memory 300 MiB is too little" in res.output
    assert not (tmp_path / "x.y4m").exists()
    res = runner.invoke(main, ["decode", str(out), str(tmp_path / "x.y4m"), "--max-memory", "lots"])
    assert res.exit_code != 0 and "--max-memory" in res.output and not (tmp_path / "x.y4m").exists()
    # a tiny frame is tiled only under a tiny budget: pretend the process itself takes nothing
    monkeypatch.setattr(tiling, "PROCESS_BYTES", 0)
    monkeypatch.setattr(tiling, "MIN_DECODER_BUDGET", 0)
    tiled = []
    monkeypatch.setattr(tiling.TiledDecoding, "close", lambda self: tiled.append(len(self.tiles)))
    results = []
    for limit, said in (("0", "whole frames"), ("64K", "tiles of up to")):
        dst = tmp_path / f"{limit}.y4m"
        res = runner.invoke(main, ["decode", str(out), str(dst), "--model", str(tiny_model), "-q", "-v", "--max-memory", limit])
        assert res.exit_code == 0 and said in res.output, res.output
        results.append(dst.read_bytes())
    assert tiled and tiled[0] > 1
    whole, parts = (np.frombuffer(r, dtype=np.uint8).astype(int) for r in results)
    assert whole.shape == parts.shape and np.abs(whole - parts).max() <= 1  # summation order only


def test_state_store_roundtrip_keeps_layout_and_dtype():
    from lfqcodec.model.layers import CausalConv3d
    from lfqcodec.model.tiling import _PastStore

    layers = [CausalConv3d(6, 6), CausalConv3d(3, 3)]
    last = torch.randn(1, 6, 2, 5, 7).contiguous(memory_format=torch.channels_last_3d)
    first = torch.randn(1, 3, 2, 4, 4, dtype=torch.bfloat16)
    for spill in (False, True):
        store = _PastStore(spill)
        try:
            store.restore(0, layers)
            assert all(layer.past is None for layer in layers)  # a tile's first window has no past
            layers[0].past, layers[1].past = last, first
            store.keep(0, layers)
            assert all(layer.past is None for layer in layers)
            layers[0].past, layers[1].past = last * 2, first.float()
            store.keep(1, layers)
            store.restore(0, layers)
            assert torch.equal(layers[0].past, last) and layers[0].past.is_contiguous(memory_format=torch.channels_last_3d)
            assert layers[1].past.dtype == torch.bfloat16 and torch.equal(layers[1].past, first)
            layers[0].past = last * 3
            store.keep(0, layers)  # written over the same place
            store.restore(1, layers)
            assert torch.equal(layers[0].past, last * 2) and layers[1].past.dtype == torch.float32
            store.restore(0, layers)
            assert torch.equal(layers[0].past, last * 3)
        finally:
            store.close()
