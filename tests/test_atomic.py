"""lfqcodec.base.atomic: outputs are complete or absent, temporary files never follow planted links."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from lfqcodec.base import atomic
from lfqcodec.base.atomic import (
    TEMP_MARKER,
    atomic_open,
    atomic_output,
    atomic_write_bytes,
    atomic_write_text,
    check_destination,
)
from lfqcodec.base.errors import LfqError

PACKAGE = Path(atomic.__file__).parent


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if TEMP_MARKER in p.name)


def predictable_names(monkeypatch, *tokens: str) -> None:
    """Make the 'random' part of the temporary names a known sequence, as an attacker would wish."""
    sequence = iter(tokens)
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(sequence))


def test_written_file_is_complete_and_no_temporary_is_left(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"abc" * 1000)
    assert target.read_bytes() == b"abc" * 1000
    atomic_write_text(target, "replaced")
    assert target.read_text() == "replaced"
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError("writer failed"), KeyboardInterrupt()])
def test_failure_or_ctrl_c_leaves_no_file_and_the_old_one_intact(tmp_path, error):
    new, old = tmp_path / "new.bin", tmp_path / "old.bin"
    old.write_bytes(b"previous")
    for target in (new, old):
        with pytest.raises(type(error)):
            with atomic_open(target) as handle:
                handle.write(b"half")
                raise error
        with pytest.raises(type(error)):
            with atomic_output(target) as tmp:
                tmp.write_bytes(b"half")
                raise error
    assert not new.exists() and old.read_bytes() == b"previous"
    assert temporaries(tmp_path) == []


def test_path_writers_get_a_fresh_private_file_with_the_destination_suffix(tmp_path):
    target = tmp_path / "frames.npy"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npy" and TEMP_MARKER in tmp.name
        assert tmp.is_file() and not tmp.is_symlink() and tmp.stat().st_size == 0
        np.save(tmp, np.arange(5))
    assert np.array_equal(np.load(target), np.arange(5))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # as any new file, not 0600


def test_two_writers_never_share_a_temporary_name(tmp_path):
    with atomic_output(tmp_path / "a.lfq") as first, atomic_output(tmp_path / "a.lfq") as second:
        assert first != second
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    assert (tmp_path / "a.lfq").read_bytes() == b"1" and temporaries(tmp_path) == []  # the last to finish wins, whole


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.lfq"
    planted = tmp_path / f".out{TEMP_MARKER}{'a' * 16}.lfq"
    planted.symlink_to(victim)
    dangling = tmp_path / f".out{TEMP_MARKER}{'b' * 16}.lfq"
    dangling.symlink_to(tmp_path / "created-by-attacker")
    predictable_names(monkeypatch, "a" * 16, "b" * 16, "c" * 16)
    with atomic_open(target) as handle:
        handle.write(b"payload")
    assert target.read_bytes() == b"payload" and not target.is_symlink()
    assert victim.read_text() == "precious"
    assert not (tmp_path / "created-by-attacker").exists()
    assert planted.is_symlink() and dangling.is_symlink()  # someone else's files are left alone


def test_all_temporary_names_taken_is_a_one_line_error(tmp_path, monkeypatch):
    (tmp_path / f".out{TEMP_MARKER}{'a' * 16}.bin").write_text("not ours")
    predictable_names(monkeypatch, *["a" * 16] * 16)
    with pytest.raises(LfqError, match="cannot write"):
        atomic_write_bytes(tmp_path / "out.bin", b"x")
    assert not (tmp_path / "out.bin").exists()
    assert (tmp_path / f".out{TEMP_MARKER}{'a' * 16}.bin").read_text() == "not ours"


def test_file_and_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    atomic_write_bytes(tmp_path / "out.bin", b"x")
    assert synced[0] is False  # the file first
    if os.name != "nt":
        assert synced[-1] is True  # then its folder


def test_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(LfqError, match="cannot write .*No such file"):
        atomic_write_text(tmp_path / "missing" / "out.json", "{}")


def test_long_names_still_get_a_temporary_name(tmp_path):
    target = tmp_path / ("x" * 240 + ".lfq")
    atomic_write_bytes(target, b"x")
    assert target.read_bytes() == b"x"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_destination_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "pipe.lfq"
    os.mkfifo(fifo)
    with pytest.raises(LfqError, match="not a regular file"):
        check_destination(fifo, overwrite=True)
    if Path("/dev/null").exists():
        with pytest.raises(LfqError, match="not a regular file"):
            check_destination("/dev/null", overwrite=True)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_every_file_writer_uses_the_helper():
    """No module keeps its own temporary-name-then-rename copy."""
    for path in PACKAGE.glob("*.py"):
        if path.name == "atomic.py":
            continue
        text = path.read_text()
        assert not re.search(r"os\.replace\(|os\.rename\(|\.rename\(|\.replace\(tmp|\.tmp\b", text), path.name
