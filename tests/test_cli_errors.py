"""Bad input on the command line: one line ``lfqcodec: error: ...``, exit status 1, no output left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import moving_pattern, write_clip

from lfqcodec.atomic import TEMP_MARKER
from lfqcodec.cli import main


def fails(*args, message: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    output = result.output.strip()
    assert result.exit_code == 1, output
    assert "Traceback" not in output and "internal error" not in output, output
    assert output.startswith("lfqcodec: error: ") and output.count("lfqcodec: error:") == 1, output
    assert message in output, output
    return output


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, odd_clip, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("encoded") / "odd.lfq"
    result = CliRunner().invoke(main, ["encode", str(odd_clip), str(path), "--model", str(tiny_model), "-q"])
    assert result.exit_code == 0, result.output
    return path


def _unreadable(path: Path) -> None:
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything (run under `setpriv --bounding-set=-dac_override,...` to test)
        pytest.skip("files stay readable for this user")


@pytest.mark.skipif(not Path("/dev/null").exists() or not hasattr(os, "symlink"), reason="needs /dev/null")
def test_a_device_as_output_is_refused_and_left_alone(tmp_path, odd_clip, encoded, tiny_model):
    before = os.stat("/dev/null")
    fails("encode", odd_clip, "/dev/null", "--model", tiny_model, "-y", "-q", message="not a regular file")
    link = tmp_path / "null.mkv"
    link.symlink_to("/dev/null")
    fails("decode", encoded, link, "--model", tiny_model, "-y", "-q", message="not a regular file")
    assert link.is_symlink()
    fails("tokens", encoded, "/dev/null", "-y", message="not a regular file")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_as_output_is_refused(tmp_path, encoded):
    fifo = tmp_path / "out.npz"
    os.mkfifo(fifo)
    fails("tokens", encoded, fifo, "-y", message="not a regular file")
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_unreadable_inputs_are_one_line_errors(tmp_path, odd_clip, encoded, tiny_model):
    clip, lfq, model = tmp_path / "clip.mkv", tmp_path / "in.lfq", tmp_path / "model.safetensors"
    for copy, original in ((clip, odd_clip), (lfq, encoded), (model, tiny_model)):
        copy.write_bytes(Path(original).read_bytes())
        _unreadable(copy)
    fails("encode", clip, tmp_path / "a.lfq", "--model", tiny_model, "-q", message="Permission denied")
    fails("decode", lfq, tmp_path / "a.mkv", "--model", tiny_model, "-q", message="Permission denied")
    fails("info", lfq, message="Permission denied")
    fails("tokens", lfq, tmp_path / "a.npz", message="Permission denied")
    fails("encode", odd_clip, tmp_path / "b.lfq", "--model", model, "-q", message="Permission denied")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv", "in.lfq", "model.safetensors"]


def test_empty_missing_and_folder_inputs(tmp_path, encoded, tiny_model):
    empty = tmp_path / "empty.lfq"
    empty.write_bytes(b"")
    for command in (["info"], ["tokens", "_", tmp_path / "t.npz"], ["decode", "_", tmp_path / "d.mkv", "-q"]):
        for src, message in ((empty, "not an .lfq file"), (tmp_path / "missing.lfq", "No such file"),
                             (tmp_path, "is a directory")):  # fmt: skip
            args = [src if a == "_" else a for a in command[1:]] if len(command) > 1 else [src]
            fails(command[0], *args, message=message)
    fails("encode", tmp_path / "empty.lfq", tmp_path / "e.lfq", "--model", tiny_model, "-q", message="cannot open")
    fails("encode", tmp_path, tmp_path / "e.lfq", "--model", tiny_model, "-q", message="is a directory")
    assert [p.name for p in tmp_path.iterdir()] == ["empty.lfq"]


def test_outputs_into_a_missing_folder_or_over_an_existing_file(tmp_path, odd_clip, encoded, tiny_model):
    missing = tmp_path / "missing"
    fails("encode", odd_clip, missing / "a.lfq", "--model", tiny_model, "-q", message="does not exist")
    fails("decode", encoded, missing / "a.mkv", "--model", tiny_model, "-q", message="does not exist")
    fails("tokens", encoded, missing / "a.npz", message="does not exist")
    for name, command in (("existing.npz", ["tokens"]), ("existing.mkv", ["decode", "--model", tiny_model, "-q"])):
        existing = tmp_path / name
        existing.write_bytes(b"keep")
        fails(command[0], encoded, existing, *command[1:], message="-y/--overwrite")
        assert existing.read_bytes() == b"keep"
    assert [p.name for p in tmp_path.iterdir() if TEMP_MARKER in p.name] == []


def test_bench_checks_its_outputs_before_any_work(tmp_path, odd_clip, tiny_model, monkeypatch):
    pytest.importorskip("bjontegaard")
    pytest.importorskip("matplotlib")
    from lfqcodec import bench

    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("bench ran before its outputs were checked"))
    common = [odd_clip, "--model", tiny_model, "-q"]
    fails("bench", *common, "--json", tmp_path / "missing" / "b.json", message="does not exist")
    fails("bench", *common, "--plot", tmp_path, message="is a directory")
    fails("bench", *common, "--plot", tmp_path / "rd.jpgx", message="--plot")
    fails("bench", tmp_path / "missing.mkv", message="no such file")


def test_train_bad_folders_data_and_state(tmp_path, tiny_model):
    data = tmp_path / "data"
    data.mkdir()
    val = write_clip(tmp_path / "val.mkv", moving_pattern(5, 32, 32))
    common = ["--val", val, "--init", tiny_model, "--steps", 1, "--batch", 1, "--frames", 5, "--size", 16,
              "--val-frames", 5, "--device", "cpu"]  # fmt: skip
    fails("train", "--data", data, "--out", tmp_path / "run1", *common, message="at least one video and one image")
    (tmp_path / "file").write_text("")
    fails("train", "--data", data, "--out", tmp_path / "file", *common, message="is a file")
    write_clip(data / "clip.mkv", moving_pattern(9, 32, 32))
    (data / "broken.mp4").write_bytes(b"\0" * 100)
    fails("train", "--data", data, "--out", tmp_path / "run2", *common, message="broken.mp4")
    (data / "broken.mp4").unlink()
    (tmp_path / "run3").mkdir()
    (tmp_path / "run3" / "state.pt").write_bytes(b"not a state")
    fails("train", "--data", data, "--out", tmp_path / "run3", *common, message="cannot resume")
