"""Encoder presets: rate-distortion decisions, runs of chunks with a decoder update, the CLI."""

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import moving_pattern, tiny_tokenizer, write_clip

import lfqcodec
from lfqcodec.presets import preset as presets
from lfqcodec.codec import search as searching
from lfqcodec.codec.adapt import UpdateSpec, UpdateState, applied
from lfqcodec.presets.adapt_fit import FitConfig
from lfqcodec.codec.chunks import Codec
from lfqcodec.model.checkpoint import LoadedModel
from lfqcodec.cli.commands import main
from lfqcodec.format.container import LfqReader, LfqWriter
from lfqcodec.codec.scenecut import ChunkSplitter

TINY_SLOW = presets.Preset("slow", search_steps=2, fit=FitConfig(steps=3, lr=1e-2, tile=4, halo=1),
                           spec=UpdateSpec(bits=6), run_frames=9)  # fmt: skip
CONTAINER_HAS_UPDATES = hasattr(LfqWriter, "write_update")
needs_updates = pytest.mark.skipif(not CONTAINER_HAS_UPDATES, reason="the .lfq writer cannot store decoder updates")


def _loaded(seed: int = 0) -> LoadedModel:
    model = tiny_tokenizer(seed)
    return LoadedModel("tiny-test", "00" * 32, model.cfg, model)


def _runner(preset=TINY_SLOW, size=(24, 32)):
    codec = Codec(_loaded(), torch.device("cpu"))
    s = codec.cfg.spatial_factor
    grid = (-(-size[0] // s), -(-size[1] // s))
    return presets.RunEncoder(codec, grid, codec.cfg.quality_bits["medium"], preset, zstd_level=19)


def test_pays_is_the_6db_per_doubling_rule():
    assert presets.pays(0.5, 1000, 1000)
    assert not presets.pays(0.0, 1000, 1000)
    assert presets.pays(6.1, 1000, 2000) and not presets.pays(5.9, 1000, 2000)
    assert presets.pays(-0.1, 1000, 900)  # fewer bytes for a small loss
    assert not presets.pays(-1.0, 1000, 900)


@pytest.mark.parametrize("margins, chosen", [((-1.0, 0.5), 1), ((0.8, 0.5), 0), ((0.2, 0.5), 0), ((-1.0, -0.1), None)])
def test_the_first_searched_candidate_that_pays_is_kept(monkeypatch, margins, chosen):
    runner = _runner(dataclasses.replace(TINY_SLOW, fit=None))
    chunk = runner.prepare(list(moving_pattern(9, 24, 32)))
    flipped = chunk.latents.clone()
    flipped[:, 0] = -flipped[:, 0]
    candidates = [chunk.latents < 0, flipped > 0]
    monkeypatch.setattr(presets, "search_candidates", lambda *args, **kwargs: candidates)
    sizes = {}  # each candidate's bytes name it

    def sized(bits):
        for i, c in enumerate(candidates):
            if np.array_equal(bits, c[0].numpy()):
                return sizes.setdefault(i, 1000 + i)
        return 900

    monkeypatch.setattr(runner, "_bytes", sized)
    monkeypatch.setattr(presets, "margin", lambda gain, before, after, slope=6.02: margins[after - 1000])
    result = runner.encode([chunk])
    want = chunk.latents[0] > 0 if chosen is None else candidates[chosen][0]
    assert np.array_equal(result.chunks[0].bits, want.numpy())
    assert result.stats["searched_chunks"] == int(chosen is not None)


def test_progress_counts_each_search_tile_and_ends_at_the_frames(monkeypatch):
    monkeypatch.setattr(presets, "pays", lambda *args, **kwargs: False)
    runner = _runner(dataclasses.replace(TINY_SLOW, fit=None), size=(40, 56))
    monkeypatch.setattr(presets, "SearchConfig", lambda **kw: searching.SearchConfig(**{**kw, "tile": 2}))
    tiles = runner.search_tiles
    assert tiles == len(searching._spans(runner.grid[0], 2)) * len(searching._spans(runner.grid[1], 2)) > 1
    done = []
    runner.tick = done.append
    frames = list(moving_pattern(9, 40, 56))
    runner.encode([runner.prepare(frames[:5]), runner.prepare(frames[5:])])
    assert sum(done) == runner.work_units(9, 2) == 2 * tiles * TINY_SLOW.search_steps + 9
    assert done.count(TINY_SLOW.search_steps) == 2 * tiles  # one tick a tile


def test_run_round_trip_decoder_matches_the_encoders_reconstruction(monkeypatch):
    monkeypatch.setattr(presets, "pays", lambda *args, **kwargs: True)  # send the update whatever it gains
    runner = _runner()
    frames = list(moving_pattern(9, 24, 32))
    result = runner.encode([runner.prepare(frames[:5]), runner.prepare(frames[5:])])
    assert result.payload is not None and result.stats["update_sent"]
    with applied(runner.decoder, result.update):  # what the encoder measured its choices on
        expected = [np.concatenate(list(runner.codec.decode_chunk(c.bits[: runner.keep], len(c.frames), 24, 32)))
                    for c in result.chunks]  # fmt: skip
    decoder_side = Codec(_loaded(), torch.device("cpu"))  # a fresh model, as a decoder has
    state = UpdateState(decoder_side.tokenizer.decoder)
    state.use(0, result.payload)
    for chunk, want in zip(result.chunks, expected):
        got = np.concatenate(list(decoder_side.decode_chunk(chunk.bits[: runner.keep], len(chunk.frames), 24, 32)))
        assert np.array_equal(got, want)
    state.close()
    plain = np.concatenate(list(decoder_side.decode_chunk(result.chunks[0].bits[: runner.keep], 5, 24, 32)))
    assert not np.array_equal(plain, expected[0])  # the update is what made the difference


def test_a_run_is_never_worse_than_medium_on_the_rd_scale():
    runner = _runner()
    frames = list(moving_pattern(9, 24, 32, seed=3))
    result = runner.encode([runner.prepare(frames)])
    stats = result.stats
    mse = np.mean([runner._mse(c, c.bits) for c in result.chunks])
    gain = presets.psnr_of(mse) - stats["base_psnr"]
    if result.update is not None:
        with applied(runner.decoder, result.update):
            gain = presets.psnr_of(np.mean([runner._mse(c, c.bits) for c in result.chunks])) - stats["base_psnr"]
    assert gain >= presets.DB_PER_DOUBLING * np.log2(stats["bytes"] / stats["base_bytes"]) - 1e-6


def _bias_sum(decoder) -> float:
    return sum(float(p.detach().sum()) for n, p in decoder.named_parameters() if n.endswith("bias"))


def test_searches_price_bits_with_the_files_context_model_and_run_once_with_the_chosen_decoder(monkeypatch):
    from test_container import net_model

    seen = []  # (rate weight, rate model, decoder bias sum) of each search

    def recording_search(tokenizer, video, latents, keep, cfg, previous_error=None, on_tile=None):
        seen.append((cfg.rate_weight, cfg.rate_model, _bias_sum(tokenizer.decoder)))
        assert cfg.trade_db_per_doubling == presets.DB_PER_DOUBLING
        return [latents > 0]

    monkeypatch.setattr(presets, "search_candidates", recording_search)
    monkeypatch.setattr(presets, "pays", lambda *args, **kwargs: False)  # the update does not pay: searched without it
    frames = list(moving_pattern(9, 24, 32))
    plain = _runner()  # no context model (zstd files): the search has no rate term
    original = _bias_sum(plain.decoder)
    plain.encode([plain.prepare(frames[:5]), plain.prepare(frames[5:])])
    assert [w for w, m, _ in seen] == [0.0] * 2 and all(m is None for _, m, _ in seen)
    assert all(bias == original for _, _, bias in seen)
    assert plain.search_tiles == 1
    assert plain.work_units(9, 2) == TINY_SLOW.fit.steps + 2 * TINY_SLOW.search_steps + 9  # one search a chunk
    seen.clear()
    monkeypatch.setattr(presets, "pays", lambda *args, **kwargs: True)  # the update pays: searched with it
    model = net_model(bits=plain.codec.cfg.num_bits)
    rated = dataclasses.replace(TINY_SLOW, search_rate=presets.SEARCH_RATE)
    coded = presets.RunEncoder(plain.codec, plain.grid, plain.keep, rated, 19, model)
    coded.encode([coded.prepare(frames)])
    assert [(w, m) for w, m, _ in seen] == [(presets.SEARCH_RATE, model)]
    assert seen[0][2] != original


@pytest.mark.parametrize("searched_alone_pays", [True, False])
def test_an_update_is_dropped_when_the_searched_bits_do_better_without_it(monkeypatch, searched_alone_pays):
    monkeypatch.setattr(presets, "search_candidates", lambda tokenizer, video, latents, *args, **kwargs: [latents < 0])
    # the update pays, the searched bits pay, the update on top of them does not; then the searched bits
    # without the update against the encoder's bits
    answers = iter([True, True, False, searched_alone_pays])
    monkeypatch.setattr(presets, "pays", lambda *args, **kwargs: next(answers))
    runner = _runner()
    original = _bias_sum(runner.decoder)
    frames = list(moving_pattern(9, 24, 32))
    chunk = runner.prepare(frames)
    result = runner.encode([chunk])
    assert result.payload is None and result.update is None and not result.stats["update_sent"]
    chosen = chunk.latents < 0 if searched_alone_pays else chunk.latents > 0
    assert result.stats["searched_chunks"] == int(searched_alone_pays)
    assert np.array_equal(result.chunks[0].bits, chosen[0].numpy())
    assert result.stats["bytes"] == runner._bytes(result.chunks[0].bits)  # no update bytes counted
    assert _bias_sum(runner.decoder) == original  # the decoder is left as it was


class _RecordingWriter:
    def __init__(self):
        self.entries, self.calls = [], []

    def write_update(self, payload, first_chunk, chunk_count):
        self.calls.append(("update", first_chunk, chunk_count))

    def write_chunk(self, bits, frames):
        self.calls.append(("chunk", frames))
        self.entries.append(frames)


def test_runs_hold_whole_chunks_and_stop_at_scene_cuts(monkeypatch):
    monkeypatch.setattr(presets, "pays", lambda *args, **kwargs: True)
    frames = moving_pattern(23, 24, 32)
    frames[13:] = 255 - frames[13:]  # a scene cut at frame 13
    runner = _runner(TINY_SLOW)
    writer = _RecordingWriter()
    presets.write_runs(runner, ChunkSplitter(iter(frames), 30), writer, gop=5)
    chunks = [c[1] for c in writer.calls if c[0] == "chunk"]
    updates = [c for c in writer.calls if c[0] == "update"]
    assert sum(chunks) == 23
    assert chunks == [5, 5, 3, 5, 5]  # the third chunk ends at the cut
    # runs of at most 9 frames, never across the cut: [5] [5 3] | [5] [5]
    assert [u[1:] for u in updates] == [(0, 1), (1, 2), (3, 1), (4, 1)]
    covered = {i for u in updates for i in range(u[1], u[1] + u[2])}
    assert covered == set(range(len(chunks)))


def test_preset_is_recorded_and_shown(tmp_path, tiny_model):
    src = write_clip(tmp_path / "in.mkv", moving_pattern(9, 24, 32))
    runner = CliRunner()
    result = runner.invoke(main, ["encode", str(src), str(tmp_path / "f.lfq"), "--model", str(tiny_model),
                                  "--preset", "fast", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    info = lfqcodec.read_info(tmp_path / "f.lfq")
    assert info["preset"] == "fast" and info["metadata"]["preset"] == "fast"
    shown = runner.invoke(main, ["info", str(tmp_path / "f.lfq")])
    assert "preset fast" in shown.output
    bad = runner.invoke(main, ["encode", str(src), str(tmp_path / "g.lfq"), "--preset", "placebo"])
    assert bad.exit_code != 0


def test_slow_preset_without_an_update_that_pays_writes_medium_tokens(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(presets.PRESETS, "slow", TINY_SLOW)
    monkeypatch.setattr(presets, "pays", lambda *args, **kwargs: False)  # nothing pays: medium's bits, no update
    frames = moving_pattern(9, 24, 32)
    for name in ("medium", "slow"):
        lfqcodec.api.encode_frames(iter(frames), tmp_path / f"{name}.lfq", width=32, height=24, fps=Fraction(25),
                                   model=tiny_model, preset=name, scenecut=0)  # fmt: skip
    tokens = [lfqcodec.read_tokens(tmp_path / f"{name}.lfq").indices for name in ("medium", "slow")]
    assert np.array_equal(*tokens)
    assert lfqcodec.read_info(tmp_path / "slow.lfq")["preset"] == "slow"


@needs_updates
def test_file_round_trip_with_an_update(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(presets.PRESETS, "slow", TINY_SLOW)
    monkeypatch.setattr(presets, "pays", lambda *args, **kwargs: True)
    frames = moving_pattern(9, 24, 32)
    dst = tmp_path / "slow.lfq"
    lfqcodec.api.encode_frames(iter(frames), dst, width=32, height=24, fps=Fraction(25), model=tiny_model,
                               preset="slow", scenecut=0)  # fmt: skip
    info = lfqcodec.read_info(dst)
    assert info["updates"]["count"] >= 1 and info["preset"] == "slow"
    assert info["bits_per_pixel"] * 32 * 24 * 9 / 8 == pytest.approx(dst.stat().st_size)  # the update's bytes count
    decoded = np.stack(list(lfqcodec.api.decode_frames(dst, model=tiny_model)))
    again = np.stack(list(lfqcodec.api.decode_frames(dst, model=tiny_model, start=5)))
    assert np.array_equal(decoded[5:], again)  # random access applies the update of the chunk's run
    with open(dst, "rb") as handle:
        reader = LfqReader(handle)
        bits = [reader.read_chunk(i) for i in range(len(reader.chunks))]
    plain = tmp_path / "plain.lfq"
    with open(plain, "wb") as out:  # the same bits without the update parse to the same tokens
        writer = LfqWriter(out, reader.header)
        for chunk, b in zip(reader.chunks, bits):
            writer.write_chunk(b, chunk.frame_count)
        writer.close()
    assert np.array_equal(lfqcodec.read_tokens(dst).indices, lfqcodec.read_tokens(plain).indices)


@needs_updates
def test_damaged_update_is_refused_and_salvage_decodes(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(presets.PRESETS, "slow", TINY_SLOW)
    monkeypatch.setattr(presets, "pays", lambda *args, **kwargs: True)
    src = write_clip(tmp_path / "in.mkv", moving_pattern(9, 24, 32))
    dst = tmp_path / "slow.lfq"
    lfqcodec.encode_file(src, dst, model=tiny_model, preset="slow", scenecut=0)
    data = bytearray(dst.read_bytes())
    record = data.find(b"LFU1")  # the update payload's magic
    assert record > 0
    data[record + 12] ^= 0xFF
    dst.write_bytes(bytes(data))
    runner = CliRunner()
    result = runner.invoke(main, ["decode", str(dst), str(tmp_path / "out.y4m"), "--model", str(tiny_model), "-q"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "lfqcodec: error:" in result.output
    salvaged = runner.invoke(main, ["decode", str(dst), str(tmp_path / "out.y4m"), "--model", str(tiny_model),
                                    "--salvage", "-q"])  # fmt: skip
    assert salvaged.exit_code == 0 and (tmp_path / "out.y4m").exists()


@needs_updates
def test_slow_preset_output_is_reproducible(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setitem(presets.PRESETS, "slow", TINY_SLOW)
    monkeypatch.setattr(presets, "pays", lambda *args, **kwargs: True)
    frames = moving_pattern(9, 24, 32)
    for name in ("a", "b"):
        lfqcodec.api.encode_frames(iter(frames), tmp_path / f"{name}.lfq", width=32, height=24, fps=Fraction(25),
                                   model=tiny_model, preset="slow", scenecut=0, device="cpu")  # fmt: skip
    assert (tmp_path / "a.lfq").read_bytes() == (tmp_path / "b.lfq").read_bytes()
