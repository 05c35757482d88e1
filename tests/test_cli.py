"""The command line end to end on small generated clips, with a tiny random model (mechanics only)."""

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import moving_pattern, write_clip

import lfqcodec
from lfqcodec.cli.commands import main
from lfqcodec.io.videoio import VideoWriter


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def read_frames(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], Fraction(stream.average_rate or 0)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name]


def test_encode_decode_restores_size_count_and_rate(tmp_path, odd_clip, tiny_model):
    lfq = tmp_path / "odd.lfq"
    result = run("encode", odd_clip, lfq, "--model", tiny_model, "--gop", "5", "-q")
    assert result.exit_code == 0, result.output
    info = lfqcodec.read_info(lfq)
    assert (info["width"], info["height"], info["frame_count"], info["fps"]) == (37, 21, 11, "24000/1001")
    assert [c["frames"] for c in info["chunks"]] == [5, 5, 1]
    for ext in (".mkv", ".y4m", ".mp4"):
        out = tmp_path / f"back{ext}"
        result = run("decode", lfq, out, "--model", tiny_model, "-q")
        assert result.exit_code == 0, result.output
        frames, fps = read_frames(out)
        assert len(frames) == 11 and frames[0].shape == (21, 37, 3) and fps == Fraction(24000, 1001)
    assert leftovers(tmp_path) == []


def test_chunk_table_of_a_short_gop(tmp_path, odd_clip, tiny_model):
    run("encode", odd_clip, tmp_path / "a.lfq", "--model", tiny_model, "--gop", "5", "-q")
    assert list(lfqcodec.read_tokens(tmp_path / "a.lfq").chunk_starts) == [0, 2, 4]


def test_window_changes_the_steps_never_the_output(tmp_path, odd_clip, tiny_model, monkeypatch):
    """At --gop 17 the 11 frames are one chunk of 4 latent frames: --window 1 codes them in 1 + 3
    steps, --window 3 in 1 + 1 (and decodes in 4 and 2). The files are the same bytes; the decoded
    frames agree to within 1 (float sums in another order can round a pixel the other way)."""
    from lfqcodec.model.tokenizer import Decoder, Encoder

    steps = {}
    for cls in (Encoder, Decoder):
        forward = cls.forward

        def counting(self, x, first=True, _forward=forward, _name=cls.__name__):
            if x.shape[-2:] != (4, 4):  # a 4 x 4 grid is lfqcodec.model.tiling's probe of the decoder, not a step
                steps.setdefault(_name, []).append(x.shape[2])
            return _forward(self, x, first)

        monkeypatch.setattr(cls, "forward", counting)
    frames, calls = {}, {}
    for window in ("1", "3"):
        steps.clear()
        lfq = tmp_path / f"w{window}.lfq"
        run("encode", odd_clip, lfq, "--model", tiny_model, "--gop", "17", "--window", window, "-q")
        run("decode", lfq, tmp_path / f"w{window}.mkv", "--model", tiny_model, "--window", window, "-q")
        frames[window], _ = read_frames(tmp_path / f"w{window}.mkv")
        calls[window] = {name: list(sizes) for name, sizes in steps.items()}
    assert calls["1"] == {"Encoder": [1, 4, 4, 4], "Decoder": [1, 1, 1, 1]}  # frames in, latent frames in
    assert calls["3"] == {"Encoder": [1, 12], "Decoder": [1, 3]}
    assert (tmp_path / "w1.lfq").read_bytes() == (tmp_path / "w3.lfq").read_bytes()
    one, three = np.stack(frames["1"]).astype(int), np.stack(frames["3"]).astype(int)
    assert one.shape == (11, 21, 37, 3) and np.abs(one - three).max() <= 1
    assert np.mean(one != three) < 1e-3


def test_decode_range_and_png(tmp_path, odd_clip, tiny_model):
    lfq = tmp_path / "odd.lfq"
    run("encode", odd_clip, lfq, "--model", tiny_model, "--gop", "5", "-q")
    full, _ = read_frames(_decoded(tmp_path, lfq, tiny_model, "all.mkv"))
    part, _ = read_frames(_decoded(tmp_path, lfq, tiny_model, "part.mkv", "--start", "4", "--frames", "3"))
    assert len(part) == 3 and all(np.array_equal(x, y) for x, y in zip(part, full[4:7]))
    png, _ = read_frames(_decoded(tmp_path, lfq, tiny_model, "f7.png", "--start", "7", "--frames", "1"))
    assert np.array_equal(png[0], full[7])
    result = run("decode", lfq, tmp_path / "many.png", "--model", tiny_model, "-q", "--frames", "3")
    assert result.exit_code == 1 and "one frame" in result.output and not (tmp_path / "many.png").exists()


def test_png_without_frames_is_the_frame_at_start(tmp_path, odd_clip, tiny_model):
    lfq = tmp_path / "odd.lfq"
    run("encode", odd_clip, lfq, "--model", tiny_model, "--gop", "5", "-q")
    full, _ = read_frames(_decoded(tmp_path, lfq, tiny_model, "all.mkv"))
    for start, name in ((None, "first.png"), ("6", "f6.png")):
        png, _ = read_frames(_decoded(tmp_path, lfq, tiny_model, name, *(["--start", start] if start else [])))
        assert len(png) == 1 and np.array_equal(png[0], full[int(start or 0)])


def test_progress_total_is_what_will_be_coded(tmp_path, tiny_model, monkeypatch):
    """The bar counts the frames that will be encoded: --frames N of a longer source, the source's count
    when --frames is larger, and N where the container does not say how many frames it holds."""
    from lfqcodec import api

    totals = []
    real = api._progress
    monkeypatch.setattr(api, "_progress", lambda total, desc, enabled: (totals.append(total), real(total, desc, enabled))[1])
    mp4 = write_clip(tmp_path / "src.mp4", moving_pattern(13, 24, 32), codec="libx264")  # mp4 states its frame count
    mkv = write_clip(tmp_path / "src.mkv", moving_pattern(13, 24, 32))  # this mkv does not
    for src, frames, want in ((mp4, "5", 5), (mp4, "40", 13), (mkv, "5", 5)):
        totals.clear()
        result = run("encode", src, tmp_path / "o.lfq", "--model", tiny_model, "--frames", frames, "-y")
        assert result.exit_code == 0, result.output
        assert totals == [want], (src.name, frames, totals)


def _decoded(tmp_path, lfq, model, name, *extra):
    out = tmp_path / name
    result = run("decode", lfq, out, "--model", model, "-q", *extra)
    assert result.exit_code == 0, result.output
    return out


def test_still_image_input(tmp_path, tiny_model):
    frame = moving_pattern(1, 30, 40)[0]
    image = tmp_path / "still.png"
    writer = VideoWriter(image, 40, 30, Fraction(1))
    writer.write(frame)
    writer.close()
    assert run("encode", image, tmp_path / "s.lfq", "--model", tiny_model, "-q").exit_code == 0
    assert lfqcodec.read_info(tmp_path / "s.lfq")["frame_count"] == 1
    assert run("decode", tmp_path / "s.lfq", tmp_path / "s.png", "--model", tiny_model, "-q").exit_code == 0
    assert read_frames(tmp_path / "s.png")[0][0].shape == (30, 40, 3)


def test_qualities_give_increasing_sizes(tmp_path, odd_clip, tiny_model):
    sizes = []
    for quality in ("low", "medium", "high"):
        out = tmp_path / f"{quality}.lfq"
        assert run("encode", odd_clip, out, "--model", tiny_model, "--quality", quality, "-q").exit_code == 0
        sizes.append(out.stat().st_size)
        assert lfqcodec.read_info(out)["quality"] == quality
    assert sizes[0] < sizes[1] < sizes[2]


def test_info_and_tokens(tmp_path, odd_clip, tiny_model):
    lfq = tmp_path / "odd.lfq"
    run("encode", odd_clip, lfq, "--model", tiny_model, "--quality", "high", "-q")
    result = run("info", lfq)
    assert result.exit_code == 0 and "37x21, 11 frames" in result.output and "bits/pixel" in result.output
    data = json.loads(run("info", lfq, "--json").output)
    assert data["bits_per_token"] == 12 and data["latent_grid"] == [3, 5] and data["model"]["name"] == "tiny-test"
    assert run("tokens", lfq, tmp_path / "t.npz", "--sub-bits", "6").exit_code == 0
    npz = np.load(tmp_path / "t.npz")
    assert npz["indices"].shape == (4, 3, 5) and npz["sub_indices"].shape == (4, 3, 5, 2)
    assert np.array_equal(npz["sub_indices"][..., 0] + (npz["sub_indices"][..., 1] << 6), npz["indices"])
    api_tokens = lfqcodec.read_tokens(lfq, sub_bits=6)
    assert np.array_equal(api_tokens.indices, npz["indices"])


@pytest.mark.parametrize(
    "make_input,message",
    [
        (lambda d: d / "missing.mp4", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "text.mp4", b"this is a text file, not a video\n" * 20), "cannot open"),
        (lambda d: _write(d / "empty.mp4", b""), "cannot open"),
    ],
)
def test_bad_inputs_fail_with_one_line(tmp_path, tiny_model, make_input, message):
    src = make_input(tmp_path)
    out = tmp_path / "out.lfq"
    result = run("encode", src, out, "--model", tiny_model, "-q")
    assert result.exit_code == 1
    assert message in result.output and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not out.exists() and leftovers(tmp_path) == []


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_corrupt_and_truncated_lfq_are_rejected(tmp_path, odd_clip, tiny_model):
    lfq = tmp_path / "odd.lfq"
    run("encode", odd_clip, lfq, "--model", tiny_model, "-q")
    data = lfq.read_bytes()
    damaged = tmp_path / "damaged.lfq"
    damaged.write_bytes(data[:-300] + bytes([data[-300] ^ 1]) + data[-299:])
    truncated = tmp_path / "truncated.lfq"
    truncated.write_bytes(data[: len(data) // 2])
    for bad, message in ((damaged, "checksum"), (truncated, "truncated")):
        out = tmp_path / "out.mkv"
        result = run("decode", bad, out, "--model", tiny_model, "-q")
        assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1
        assert not out.exists()
    assert leftovers(tmp_path) == []


def test_overwrite_rules_and_wrong_model(tmp_path, odd_clip, tiny_model):
    lfq = tmp_path / "odd.lfq"
    assert run("encode", odd_clip, lfq, "--model", tiny_model, "-q").exit_code == 0
    before = lfq.read_bytes()
    result = run("encode", odd_clip, lfq, "--model", tiny_model, "-q")
    assert result.exit_code == 1 and "exists" in result.output and lfq.read_bytes() == before
    assert run("encode", odd_clip, lfq, "--model", tiny_model, "-q", "-y").exit_code == 0
    result = run("encode", lfq, lfq, "--model", tiny_model, "-q", "-y")
    assert result.exit_code == 1 and "same file" in result.output
    from conftest import tiny_tokenizer

    from lfqcodec.model.checkpoint import save_model

    other = tmp_path / "other.safetensors"
    save_model(other, tiny_tokenizer(seed=1), "other")
    result = run("decode", lfq, tmp_path / "x.mkv", "--model", other, "-q")
    assert result.exit_code == 1 and "was made with model 'tiny-test'" in result.output
    result = run("decode", lfq, tmp_path / "x.avi", "--model", tiny_model, "-q")
    assert result.exit_code == 1 and "unsupported output format" in result.output


def test_interrupted_encode_leaves_nothing(tmp_path, odd_clip, tiny_model, monkeypatch):
    from lfqcodec import api

    def explode(self, bits, frame_count):
        raise KeyboardInterrupt

    monkeypatch.setattr(api.LfqWriter, "write_chunk", explode)
    out = tmp_path / "out.lfq"
    result = CliRunner().invoke(main, ["encode", str(odd_clip), str(out), "--model", str(tiny_model), "-q"])
    assert result.exit_code == 130 and "interrupted" in result.output
    assert not out.exists() and leftovers(tmp_path) == []


def test_salvage_decodes_intact_chunks(tmp_path, odd_clip, tiny_model):
    lfq = tmp_path / "odd.lfq"
    run("encode", odd_clip, lfq, "--model", tiny_model, "--gop", "5", "-q")
    good, _ = read_frames(_decoded(tmp_path, lfq, tiny_model, "good.mkv"))
    chunk1 = lfqcodec.read_info(lfq)["chunks"][1]
    data = bytearray(lfq.read_bytes())
    data[chunk1["offset"] + chunk1["bytes"] - 3] ^= 0xFF  # damage chunk 1's payload
    damaged = tmp_path / "damaged.lfq"
    damaged.write_bytes(bytes(data))
    assert run("decode", damaged, tmp_path / "x.mkv", "--model", tiny_model, "-q").exit_code == 1
    result = run("decode", damaged, tmp_path / "s.mkv", "--model", tiny_model, "-q", "--salvage")
    assert result.exit_code == 0 and "could not recover frames 5-9" in result.output, result.output
    salvaged, _ = read_frames(tmp_path / "s.mkv")
    assert len(salvaged) == 11
    assert all(np.array_equal(a, b) for a, b in zip(salvaged[:5] + salvaged[10:], good[:5] + good[10:]))
    truncated = tmp_path / "truncated.lfq"
    truncated.write_bytes(lfq.read_bytes()[: chunk1["offset"] + chunk1["bytes"] + 10])  # index and chunk 2 gone
    result = run("decode", truncated, tmp_path / "t.mkv", "--model", tiny_model, "-q", "--salvage")
    assert result.exit_code == 0 and "could not recover frames 10-10" in result.output
    assert all(np.array_equal(a, b) for a, b in zip(read_frames(tmp_path / "t.mkv")[0][:10], good[:10]))


def test_audio_only_file_is_rejected(tmp_path, tiny_model):
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = (np.sin(np.arange(8000) / 5) * 3000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    result = run("encode", audio, tmp_path / "a.lfq", "--model", tiny_model, "-q")
    assert result.exit_code == 1 and "no video stream" in result.output


@pytest.mark.parametrize("frames,height,width,codec,pix_fmt", [
    (1, 2, 2, "ffv1", "bgr0"), (6, 9, 17, "ffv1", "bgr0"),
    (3, 32, 32, "libx264", "yuv444p"), (3, 32, 32, "ffv1", "yuv420p10le"),
])  # fmt: skip
def test_odd_but_valid_inputs(tmp_path, tiny_model, frames, height, width, codec, pix_fmt):
    src = tmp_path / "src.mkv"
    with av.open(str(src), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i, rgb in enumerate(moving_pattern(frames, height, width)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert run("encode", src, tmp_path / "o.lfq", "--model", tiny_model, "-q").exit_code == 0
    info = lfqcodec.read_info(tmp_path / "o.lfq")
    assert (info["width"], info["height"], info["frame_count"]) == (width, height, frames)
    assert info["metadata"]["source_pix_fmt"] == pix_fmt
    assert run("decode", tmp_path / "o.lfq", tmp_path / "o.mkv", "--model", tiny_model, "-q").exit_code == 0
    decoded, _ = read_frames(tmp_path / "o.mkv")
    assert len(decoded) == frames and decoded[0].shape == (height, width, 3)


def test_video_with_audio_codes_the_video(tmp_path, tiny_model):
    src = tmp_path / "av.mkv"
    with av.open(str(src), "w") as container:
        video = container.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = 32, 24, "bgr0"
        audio = container.add_stream("pcm_s16le", rate=8000)
        for i, rgb in enumerate(moving_pattern(5, 24, 32)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 1600), dtype=np.int16), format="s16", layout="mono")
        samples.sample_rate = 8000
        for packet in [*audio.encode(samples), *audio.encode(), *video.encode()]:
            container.mux(packet)
    assert run("encode", src, tmp_path / "o.lfq", "--model", tiny_model, "-q").exit_code == 0
    assert lfqcodec.read_info(tmp_path / "o.lfq")["frame_count"] == 5


def test_unreadable_input(tmp_path, tiny_model, monkeypatch):
    src = write_clip(tmp_path / "locked.mkv", moving_pattern(3, 16, 16))
    real_open = av.open

    def denied(path, *args, **kwargs):  # chmod 000 does not stop root, so refuse the open itself
        if str(path) == str(src):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(av, "open", denied)
    result = run("encode", src, tmp_path / "o.lfq", "--model", tiny_model, "-q")
    assert result.exit_code == 1 and "Permission denied" in result.output and result.output.count("\n") == 1


def test_full_disk_leaves_no_output(tmp_path, odd_clip, tiny_model, monkeypatch):
    from lfqcodec.format import container

    def no_space(self, bits, frame_count):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(container.LfqWriter, "write_chunk", no_space)
    out = tmp_path / "out.lfq"
    result = run("encode", odd_clip, out, "--model", tiny_model, "-q")
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert not out.exists() and leftovers(tmp_path) == []


def test_colour_tags_stored_only_when_set(tmp_path, tiny_model):
    """A source's colour tags reach the header's metadata when they say something; FFmpeg's
    "unspecified" values and a rotation of 0 are not stored (every byte counts in small files)."""
    tagged, plain = tmp_path / "tagged.mkv", tmp_path / "plain.mkv"
    for path, tags in ((tagged, {"color_range": 1, "colorspace": 1, "color_primaries": 1, "color_trc": 1}),
                       (plain, {})):  # fmt: skip
        with av.open(str(path), "w") as container:
            stream = container.add_stream("ffv1", rate=25)
            stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
            for name, value in tags.items():
                setattr(stream.codec_context, name, value)
            for i, rgb in enumerate(moving_pattern(2, 16, 16)):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
                frame.pts = i
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        out = path.with_suffix(".lfq")
        assert run("encode", path, out, "--model", tiny_model, "-q").exit_code == 0
        meta = lfqcodec.read_info(out)["metadata"]
        stored = {k: v for k, v in meta.items() if k.startswith("source_color")}
        assert stored == {f"source_{name}": str(value) for name, value in tags.items()}
        assert "source_rotation" not in meta and "conversion" not in meta


def test_help_texts_say_what_the_options_do():
    import re

    from lfqcodec.model.checkpoint import load_model

    helps = {name: " ".join(run(name, "--help").output.split()) for name in ("encode", "decode", "tokens")}
    bits = load_model().config.quality_bits  # the shipped model's config, whatever its numbers
    assert ", ".join(f"{q} {bits[q]}" for q in ("low", "medium", "high")) in helps["encode"]
    assert all("Replace DST if it exists" in text for text in helps.values())
    assert "zstd level (1-22)" in helps["encode"] and "Encode the first N frames only" in helps["encode"]
    device = re.search(r"--device \[auto\|cpu\|cuda\] (.*?) --precision", helps["decode"]).group(1)
    window = re.search(r"--window INTEGER RANGE (.*?) -y", helps["decode"]).group(1)
    assert "decodes" in device and "bits" not in device and "decoded" in window and "bits" not in window
    quiet = re.search(r"-q, --quiet (.*?) -v,", helps["decode"]).group(1)
    assert quiet.startswith("No progress bar or summary line") and "ffmpeg" not in quiet.lower()
