"""Bad input on the command line, bad option values included: one line ``lfqcodec: error: ...``, exit status 1,
no output left."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import moving_pattern, write_clip

import lfqcodec
from lfqcodec.base.atomic import TEMP_MARKER
from lfqcodec.cli.commands import main


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
    from lfqcodec.bench import suite as bench

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


def _commands_with_arguments():
    """Every subcommand with arguments it can take: the required arguments as placeholders."""
    for name, command in sorted(main.commands.items()):
        required = [p for p in command.params if isinstance(p, click.Argument) and p.required]
        yield name, command, ["placeholder"] * len(required)


def test_usage_errors_are_one_line_in_every_command():
    """Click's three-line usage block with exit status 2 is one line and status 1, in every subcommand
    (an unknown option, a missing argument) and in the group itself."""
    for name, command, arguments in _commands_with_arguments():
        fails(name, *arguments, "--no-such-option", message="no such option")
        if arguments:
            missing = [p for p in command.params if isinstance(p, click.Argument) and p.required][-1]
            fails(name, *arguments[:-1], message=f"missing argument '{missing.human_readable_name}")
        required = [p for p in command.params if isinstance(p, click.Option) and p.required]
        if required:
            fails(name, *arguments, message=f"missing option '{required[0].opts[-1]}'")
    fails("--no-such-option", message="no such option")
    fails("no-such-command", message="no such command")


@pytest.mark.parametrize("args,message", [
    (["encode", "a.mp4", "b.lfq", "--frames", "0"], "invalid value for '--frames'"),
    (["encode", "a.mp4", "b.lfq", "--quality", "ultra"], "'ultra' is not one of"),
    (["encode", "a.mp4"], "missing argument 'DST'"),
    (["decode", "a.lfq", "b.mkv", "--frames", "0"], "invalid value for '--frames'"),
    (["decode", "a.lfq", "b.mkv", "--max-memory", "lots"], "--max-memory"),
    (["info", "a.lfq", "--max-pixels", "-1"], "--max-pixels"),
    (["tokens", "a.lfq", "b.npz", "--sub-bits", "0"], "--sub-bits"),
    (["tokenize", "a.mp4", "--out", "o", "--quality", "ultra"], "'ultra' is not one of"),
    (["bench", "a.mp4", "--preset", "placebo"], "'placebo' is not one of"),
    (["bench", "a.mp4", "--quality", "medium,ultra"], "'ultra' is not one of"),
    (["train", "--encoder-blocks", "x"], "--encoder-blocks"),
])  # fmt: skip
def test_bad_option_values_are_one_line(args, message):
    assert fails(*args, message=message).endswith(f"(see main {args[0]} --help)")


def test_a_command_added_later_gets_one_line_usage_errors(monkeypatch):
    @click.command("probe")
    @click.option("--count", type=click.IntRange(1), default=1)
    def probe(count):
        click.echo(f"count {count}")

    monkeypatch.setitem(main.commands, "probe", probe)
    fails("probe", "--count", "0", message="invalid value for '--count'")
    assert CliRunner().invoke(main, ["probe", "--count", "2"]).output == "count 2\n"


def test_outputs_must_say_what_they_hold(tmp_path, odd_clip, encoded, tiny_model):
    fails("encode", odd_clip, tmp_path / "x.mp4", "--model", tiny_model, "-q", message="name it x.lfq")
    fails("tokens", encoded, tmp_path / "tok.csv", message="name it tok.npz")
    fails("encode", odd_clip, tmp_path / "noext", "--model", tiny_model, "-q", message="name it noext.lfq")
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(main, ["encode", str(odd_clip), str(tmp_path / "UPPER.LFQ"), "--model", str(tiny_model), "-q"])
    assert result.exit_code == 0, result.output


def test_an_lfq_given_to_encode_points_to_decode(tmp_path, encoded, tiny_model):
    copy = tmp_path / "named.mp4"  # the contents say what it is, whatever the name
    copy.write_bytes(encoded.read_bytes())
    for src in (encoded, copy):
        fails("encode", src, tmp_path / "again.lfq", "--model", tiny_model, "-q", message="use lfqcodec decode")


def test_a_damaged_index_names_salvage(tmp_path, encoded, tiny_model):
    truncated = tmp_path / "truncated.lfq"
    truncated.write_bytes(encoded.read_bytes()[:-5])
    for command in (["decode", truncated, tmp_path / "out.mkv", "--model", tiny_model, "-q"], ["info", truncated]):
        output = fails(*command, message="trailer not found")
        assert "--salvage" in output


def test_a_damaged_chunk_names_salvage(tmp_path, encoded, tiny_model):
    from lfqcodec.format.container import LfqReader

    data = bytearray(encoded.read_bytes())
    with open(encoded, "rb") as handle:
        first = LfqReader(handle).chunks[0]
    data[first.offset + first.size - 1] ^= 0xFF  # the last payload byte of chunk 0: its checksum fails
    damaged = tmp_path / "damaged.lfq"
    damaged.write_bytes(bytes(data))
    output = fails("decode", damaged, tmp_path / "out.mkv", "--model", tiny_model, "-q", message="checksum mismatch")
    assert output.endswith("lfqcodec decode --salvage decodes the intact chunks")


def test_a_start_past_the_end_says_the_frames_there_are(tmp_path, encoded, tiny_model):
    frames = lfqcodec.read_info(encoded)["frame_count"]
    fails("decode", encoded, tmp_path / "out.mkv", "--model", tiny_model, "-q", "--start", frames,
          message=f"--start {frames} is outside the file's frames 0..{frames - 1}")  # fmt: skip


def test_info_max_pixels_zero_is_no_limit(encoded):
    assert CliRunner().invoke(main, ["info", str(encoded), "--max-pixels", "0"]).exit_code == 0
    fails("info", encoded, "--max-pixels", "100", message="exceeds --max-pixels 100")


def test_tokenize_without_pyarrow_names_the_extra(tmp_path, odd_clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    fails("tokenize", odd_clip, "--out", tmp_path / "tokens", message="pip install 'lfqcodec[scale]'")
    assert not (tmp_path / "tokens").exists()


@pytest.mark.parametrize("value, message", [("nan", "not a finite number"), ("inf", "not a finite number"),
                                            ("-inf", "--scenecut")])  # fmt: skip
def test_non_finite_numbers_are_refused(tmp_path, value, message):
    fails("encode", tmp_path / "a.mp4", tmp_path / "a.lfq", "--scenecut", value, message=message)


def test_ctrl_c_while_the_commands_load_is_one_line(tmp_path):
    """The console script's ``lfqcodec.cli.main`` loads torch; an interrupt then ends in one line too."""
    import subprocess
    import sys

    code = ("import importlib.abc, sys\n"
            "class Interrupt(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name == 'lfqcodec.cli.commands':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Interrupt())\n"
            "sys.argv = ['lfqcodec', 'info', 'x.lfq']\n"
            "from lfqcodec.cli import main\n"
            "main()\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (130, "lfqcodec: error: interrupted\n")


def test_no_arguments_shows_the_help_and_exits_1():
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 1 and "Usage:" in result.output and "encode" in result.output
