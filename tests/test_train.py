import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, moving_pattern, tiny_tokenizer, write_clip

from lfqcodec.model.checkpoint import load_model
from lfqcodec.model.config import TokenizerConfig
from lfqcodec.training.data import ClipSampler, SamplerConfig
from lfqcodec.base.errors import LfqError
from lfqcodec.model.inference import native_bf16
from lfqcodec.model.tokenizer import TokenizerNet
from lfqcodec.training.recipe import (
    TrainConfig, bf16_autocast_default, compute_losses, learning_rate, reconstruction_loss, warm_start,
)
from lfqcodec.training.distill import distillation_loss, searched_bits
from lfqcodec.training.train import train
from lfqcodec.io.videoio import VideoWriter


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = tiny_tokenizer().train()
    video = torch.from_numpy(moving_pattern(5, 32, 32)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    video = video.repeat(2, 1, 1, 1, 1)
    keep = torch.tensor([6, 12])
    cfg = TrainConfig()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        loss, stats, _ = compute_losses(model, video, keep, cfg, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(stats["rec"])
        assert torch.isfinite(loss)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=1000, warmup=100, lr=1e-3, min_lr_ratio=0.1)
    assert learning_rate(0, cfg) < learning_rate(50, cfg) < learning_rate(99, cfg) <= 1e-3
    assert abs(learning_rate(1000, cfg) - 1e-4) < 1e-12


def _write_image(path, frame):
    writer = VideoWriter(path, frame.shape[1], frame.shape[0], Fraction(1))
    writer.write(frame)
    writer.close()


def _training_data(tmp_path):
    """A folder with one generated clip and one photo, and a held-out validation clip."""
    data = tmp_path / "data"
    data.mkdir()
    write_clip(data / "train.mkv", moving_pattern(12, 64, 80, seed=1))
    _write_image(data / "photo.png", moving_pattern(1, 96, 96, seed=2)[0])
    return data, write_clip(tmp_path / "val.mkv", moving_pattern(9, 32, 48, seed=3))


def test_train_run_checkpoints_validates_and_resumes(tmp_path):
    data, val = _training_data(tmp_path)
    out = tmp_path / "run"
    cfg = TrainConfig(steps=4, batch=2, image_batch=2, val_every=2, log_every=2, warmup=2)
    sampler = SamplerConfig(frames=5, size=32, image_size=32, max_scale=2)
    train(TINY_CONFIG, cfg, sampler, [data], [val], out, name="tiny-run", device="cpu")
    rows = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert set(rows[-1]) >= {"low", "medium", "high", "bit_usage"} and rows[-1]["medium"]["bpp"] > 0
    assert len(rows[-1]["bit_usage"]) == TINY_CONFIG.num_bits
    assert load_model(out / "tiny-run.safetensors").config == TINY_CONFIG
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 4

    # Mark the saved state so that a run which ignored it could not pass: a weight, its EMA and
    # the optimizer's step count are set to values training from scratch would never produce.
    marked = "encoder.stem.conv.weight"
    state["model"][marked] = torch.full_like(state["model"][marked], 0.5)
    state["ema"][marked] = torch.full_like(state["ema"][marked], 0.5)
    for param_state in state["optimizer"]["state"].values():
        param_state["step"] = torch.tensor(1000.0)
    torch.save(state, out / "state.pt")
    train(TINY_CONFIG, TrainConfig(**{**cfg.__dict__, "steps": 5, "log_every": 1}), sampler, [data], [val], out,
          name="tiny-run", device="cpu")  # fmt: skip
    resumed = torch.load(out / "state.pt", weights_only=True)
    assert resumed["step"] == 5
    assert {float(s["step"]) for s in resumed["optimizer"]["state"].values()} == {1001.0}  # one step after 1000
    assert (resumed["model"][marked] - 0.5).abs().max() < 0.05  # one small step from the restored weights
    assert (resumed["ema"][marked] - 0.5).abs().max() < 0.05
    steps_logged = [json.loads(line)["step"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert steps_logged == [2, 4, 5]  # the resumed run continued at step 5, it did not start again at 1
    assert [json.loads(line)["step"] for line in (out / "val.jsonl").read_text().splitlines()] == [2, 4, 5]


def test_warm_start_into_a_grown_decoder_keeps_the_output():
    """Adding the per-frame refiner to a trained decoder starts from the same reconstructions."""
    torch.manual_seed(0)
    plain = tiny_tokenizer()
    small = TokenizerNet(TokenizerConfig(**{**TINY_CONFIG.to_dict(), "refine_channels": ()}))
    warm_start(small, plain)
    grown = TokenizerNet(TINY_CONFIG).eval()
    fresh = warm_start(grown, small.eval())
    assert fresh and all(name.startswith("decoder.refine.") for name in fresh)
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    bits = small.encode(video)
    assert torch.equal(grown.encode(video), bits)
    assert torch.allclose(grown.decode(bits), small.decode(bits), atol=1e-6)


def test_config_written_before_the_refiner_existed_loads_without_it():
    saved = {k: v for k, v in TINY_CONFIG.to_dict().items() if k != "refine_channels"}
    assert TokenizerConfig.from_dict(saved).refine_channels == ()


def test_sampler_temporal_strides_reach_max_stride(tmp_path):
    frames = np.zeros((40, 32, 32, 3), np.uint8) + (np.arange(40, dtype=np.uint8) * 6)[:, None, None, None]
    np.save(tmp_path / "video-ramp.npy", frames)
    np.save(tmp_path / "image-flat.npy", frames[:1])
    cached = sorted(tmp_path.glob("*.npy"))
    seen = set()
    for max_stride in (1, 4):
        sampler = ClipSampler(cached, SamplerConfig(frames=5, size=16, max_stride=max_stride, photo_move_fraction=0), seed=1)
        strides = set()
        for _ in range(200):
            values = (sampler.video_batch(1)[0, 0, :, 0, 0] + 1) * 127.5 / 6  # frame index of each sampled frame
            steps = torch.diff(values).abs().round().unique()
            assert len(steps) == 1
            strides.add(int(steps[0]))
        seen.add((max_stride, tuple(sorted(strides))))
    assert seen == {(1, (1,)), (4, (1, 2, 3, 4))}


@pytest.mark.parametrize("frozen,trained_part", [("decoder", "encoder"), ("encoder", "decoder")])
def test_freezing_one_half_trains_the_other_only(tmp_path, tiny_model, frozen, trained_part):
    data, val = _training_data(tmp_path)
    out = tmp_path / "run"
    cfg = TrainConfig(steps=3, batch=2, image_batch=2, val_every=3, log_every=1, warmup=1,
                      **{f"freeze_{frozen}": True})  # fmt: skip
    train(TINY_CONFIG, cfg, SamplerConfig(frames=5, size=32, image_size=32, max_scale=2), [data], [val], out,
          init=str(tiny_model), device="cpu")  # fmt: skip
    start = load_model(tiny_model).tokenizer.state_dict()
    trained = torch.load(out / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(trained[n], v.float()) for n, v in start.items() if n.startswith(frozen + "."))
    assert not all(torch.equal(trained[n], v.float()) for n, v in start.items() if n.startswith(trained_part + "."))


def test_warm_start_into_a_grown_encoder_keeps_the_bits():
    """Extra encoder blocks start as identity, so a grown encoder starts from the same bits."""
    torch.manual_seed(0)
    small = tiny_tokenizer().eval()
    grown = TokenizerNet(TokenizerConfig(**{**TINY_CONFIG.to_dict(), "encoder_blocks": (2, 3)})).eval()
    fresh = warm_start(grown, small)
    assert fresh and all(name.startswith(("encoder.levels.0.1.", "encoder.levels.1.1.", "encoder.levels.1.2."))
                         for name in fresh)  # fmt: skip
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    assert torch.equal(grown.encode(video), small.encode(video))


def test_warm_start_into_a_grown_decoder_keeps_the_reconstruction():
    """Extra decoder blocks start as identity too: same bits, same pictures at step 0."""
    torch.manual_seed(0)
    small = tiny_tokenizer().eval()
    for _, param in small.decoder.named_parameters():  # non-zero everywhere, as after training
        param.data.add_(0.01 * torch.randn_like(param))
    grown = TokenizerNet(TokenizerConfig(**{**TINY_CONFIG.to_dict(), "decoder_blocks": (3, 1)})).eval()
    fresh = warm_start(grown, small)
    assert fresh and all(name.startswith(("decoder.levels.1.1.", "decoder.levels.1.2.")) for name in fresh)
    video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    with torch.no_grad():
        bits = small.encode(video)
        assert torch.allclose(grown.decode(bits), small.decode(bits), atol=1e-6)


def test_cli_train_grows_the_decoder_in_fp32(tmp_path, tiny_model):
    from click.testing import CliRunner

    from lfqcodec.cli.commands import main

    data, val = _training_data(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--val", val, "--out", out, "--init", tiny_model, "--decoder-blocks", "2,1",
            "--precision", "fp32", "--steps", 1, "--val-every", 1, "--batch", 1, "--frames", 5, "--size", 32,
            "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert load_model(out / "lfq-base.safetensors").config.decoder_blocks == (2, 1)
    assert json.loads(torch.load(out / "state.pt", weights_only=True)["train_config"])["bf16"] is False


def test_cli_train_grows_the_encoder_of_the_init_model(tmp_path, tiny_model):
    from click.testing import CliRunner

    from lfqcodec.cli.commands import main

    data, val = _training_data(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--data", data, "--val", val, "--out", out, "--init", tiny_model, "--encoder-blocks", "2,2",
            "--freeze-decoder", "--steps", 2, "--val-every", 2, "--batch", 2, "--frames", 5, "--size", 32,
            "--entropy-weight", 0.05, "--commitment-weight", 0.05, "--quality-mix", "low=1,medium=1",
            "--distill-steps", 1, "--distill-weight", 0.3, "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    trained = load_model(out / "lfq-base.safetensors")
    assert trained.config == TokenizerConfig(**{**TINY_CONFIG.to_dict(), "encoder_blocks": (2, 2)})
    start = load_model(tiny_model).tokenizer.decoder.state_dict()
    assert all(torch.equal(trained.tokenizer.decoder.state_dict()[n], v) for n, v in start.items())
    saved = json.loads(torch.load(out / "state.pt", weights_only=True)["train_config"])
    assert saved["entropy_weight"] == saved["commitment_weight"] == 0.05
    assert saved["quality_probs"] == {"low": 1.0, "medium": 1.0}
    assert saved["distill_steps"] == 1 and saved["distill_weight"] == 0.3

    bad = CliRunner().invoke(main, ["train", "--data", str(data), "--val", str(val), "--out", str(tmp_path / "bad"),
                                    "--init", str(tiny_model), "--encoder-blocks", "2,x"])  # fmt: skip
    assert bad.exit_code != 0 and "--encoder-blocks" in bad.output and "Traceback" not in bad.output
    for mix in ("ultra=1", "low=x", "low"):
        bad = CliRunner().invoke(main, ["train", "--data", str(data), "--val", str(val), "--out", str(tmp_path / "bad"),
                                        "--init", str(tiny_model), "--quality-mix", mix])  # fmt: skip
        assert bad.exit_code != 0 and mix.split("=")[0] in bad.output and "Traceback" not in bad.output


def _pattern_batch(n: int = 2, frames: int = 5, size: int = 32) -> torch.Tensor:
    video = torch.from_numpy(moving_pattern(frames, size, size)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    return video.repeat(n, 1, 1, 1, 1)


def test_searched_bits_are_never_worse_than_the_encoders():
    torch.manual_seed(0)
    model = tiny_tokenizer().eval()
    video = _pattern_batch()
    keep = torch.tensor([6, 12])
    with torch.no_grad():
        latents = model.encoder(video)
    bits, mask = searched_bits(model.decoder, latents, video, keep, steps=4, lr=0.3)
    assert bits.shape == latents.shape and bits.dtype == torch.bool
    assert mask[0, :6].eq(1).all() and mask[0, 6:].eq(0).all() and mask[1, :12].eq(1).all()

    def error(chosen):
        with torch.no_grad():
            return (model.decoder((chosen.float() * 2 - 1) * mask) - video).pow(2).mean(dim=(1, 2, 3, 4))

    start, found = error(latents > 0), error(bits)
    assert (found <= start + 1e-7).all() and (found < start).any()
    assert not any(p.grad is not None for p in model.parameters())  # the decoder's weights get no gradient


def test_distillation_loss_pulls_the_latents_to_the_target_bits():
    latents = torch.tensor([[0.5, -0.2, 0.1]]).view(1, 3, 1, 1, 1).requires_grad_(True)
    target = torch.tensor([[True, True, False]]).view(1, 3, 1, 1, 1)
    mask = torch.tensor([[1.0, 1.0, 0.0]]).view(1, 3, 1, 1, 1)
    distillation_loss(latents, target, mask).backward()
    grad = latents.grad.flatten()
    assert grad[0] < 0 and grad[1] < 0 and grad[2] == 0  # both kept bits pushed towards +1, the dropped one left


def test_training_step_with_distillation_logs_the_flipped_share():
    torch.manual_seed(0)
    model = tiny_tokenizer().train()
    loss, stats, _ = compute_losses(model, _pattern_batch(), torch.tensor([6, 12]), TrainConfig(distill_steps=2), 0)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= stats["flipped"] <= 1 and stats["distill"] > 0
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_losses_are_fp32_under_bf16_autocast():
    """bf16 SSIM gave -inf losses and bf16 entropy terms were off: both must ignore autocast."""
    torch.manual_seed(0)
    recon, target = torch.rand(2, 3, 5, 32, 32) * 2 - 1, torch.rand(2, 3, 5, 32, 32) * 2 - 1
    z = torch.randn(2, TINY_CONFIG.num_bits, 2, 4, 4)
    quantizer = tiny_tokenizer().quantizer
    reference_rec, reference_q = reconstruction_loss(recon, target, 0.2), quantizer(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rec, q = reconstruction_loss(recon, target, 0.2), quantizer(z)
    assert rec.dtype == torch.float32 and torch.allclose(rec, reference_rec)
    for name in ("entropy_loss", "commitment_loss", "token_entropy", "codebook_entropy"):
        value = getattr(q, name)
        assert value.dtype == torch.float32 and torch.allclose(value, getattr(reference_q, name)), name


def test_bf16_default_follows_the_device():
    assert bf16_autocast_default(torch.device("cuda"))
    assert bf16_autocast_default(torch.device("cpu")) == native_bf16(torch.device("cpu"))[0]


def test_rmse_pixel_loss_is_the_root_mean_squared_error():
    recon, target = torch.zeros(1, 3, 1, 8, 8), torch.zeros(1, 3, 1, 8, 8)
    recon[..., :2, :] = 0.5  # a quarter of the pixels off by 0.5
    assert reconstruction_loss(recon, target, 0.0, "rmse").item() == pytest.approx(0.25)
    assert reconstruction_loss(recon, target, 0.0, "l1").item() == pytest.approx(0.125)
    with pytest.raises(LfqError, match="pixel loss"):
        reconstruction_loss(recon, target, 0.0, "l2")


def test_rmse_training_step_runs():
    torch.manual_seed(0)
    model = tiny_tokenizer().train()
    loss, stats, _ = compute_losses(model, _pattern_batch(), torch.tensor([6, 12]), TrainConfig(pixel_loss="rmse"), 0)
    loss.backward()
    assert torch.isfinite(loss) and stats["rec"] > 0


def test_decorrelation_weight_adds_the_bit_correlation_to_the_loss():
    torch.manual_seed(0)
    model = tiny_tokenizer().train()
    batch, keep = _pattern_batch(), torch.tensor([6, 12])
    torch.manual_seed(1)
    plain, plain_stats, _ = compute_losses(model, batch, keep, TrainConfig(), 0)
    torch.manual_seed(1)
    weighted, stats, _ = compute_losses(model, batch, keep, TrainConfig(decorrelation_weight=2.0), 0)
    assert 0 < stats["bit_correlation"] <= 1
    assert weighted.item() == pytest.approx(plain.item() + 2.0 * plain_stats["bit_correlation"], rel=1e-5)
