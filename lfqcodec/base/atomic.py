"""Every file lfqcodec writes goes through here: complete under its final name, or absent.

The data is written to a temporary file in the destination's folder, created with a random name
and ``O_CREAT | O_EXCL`` (``O_NOFOLLOW`` where the OS has it), so a file or symlink planted at a
guessable name in a shared folder is never followed or overwritten; the file is flushed and
fsynced, renamed over the destination (atomic on POSIX and on Windows within one volume), and the
folder is fsynced after the rename where the OS allows it, so a crash right after the rename
cannot lose the new name. On any failure, Ctrl-C included, the temporary file is removed and the
destination is left as it was.

* :func:`atomic_output` yields the temporary *path*, for writers that open a file by name
  (PyAV, safetensors);
* :func:`atomic_open` yields a binary *file object* (``torch.save``, ``np.save``, JSON, plots);
* :func:`atomic_write_bytes` / :func:`atomic_write_text` write a whole buffer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import LfqError

TEMP_MARKER = ".partial-"  # every temporary name holds this (tests and clean-up scripts look for it)
_TEMP_ATTEMPTS = 16  # random names tried before giving up (a clash is a 2^-64 event, or an attack)
_MAX_STEM = 100  # keeps the temporary name under NAME_MAX (255 bytes) for long destination names
_CREATE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)  # fmt: skip


def check_destination(dst: str | os.PathLike, overwrite: bool, sources: tuple[str | os.PathLike, ...] = (),
                      suffix: str | None = None) -> Path:  # fmt: skip
    """Refuse to clobber an existing file (unless ``overwrite``), to write over an input, or to
    replace something that is not a regular file (a folder, ``/dev/null``, a FIFO): the rename
    would swap a device node for a plain file. With ``suffix`` (e.g. ``".lfq"``), the name must
    end in it, so that an output says what it holds."""
    dst = Path(dst)
    if dst.is_dir():
        raise LfqError(f"output {dst} is a directory")
    if dst.exists() and not dst.is_file():
        raise LfqError(f"output {dst} is not a regular file (outputs are written beside it, then renamed over it)")
    if suffix is not None and dst.suffix.lower() != suffix:
        raise LfqError(f"output {dst} would hold {suffix} data under another extension: name it "
                       f"{dst.with_suffix(suffix).name}")  # fmt: skip
    for src in sources:
        if dst.exists() and Path(src).exists() and os.path.samefile(src, dst):
            raise LfqError(f"output {dst} is the same file as the input")
    if dst.exists() and not overwrite:
        raise LfqError(f"output {dst} exists (use -y/--overwrite to replace it)")
    if not dst.parent.is_dir():
        raise LfqError(f"output folder {dst.parent} does not exist")
    return dst


def _temp_name(dst: Path) -> Path:
    """``.<stem>.partial-<64 random bits><suffix>`` next to ``dst`` (the suffix is kept so that
    writers which pick a format from the extension still do)."""
    return dst.with_name(f".{dst.stem[:_MAX_STEM]}{TEMP_MARKER}{secrets.token_hex(8)}{dst.suffix[:_MAX_STEM]}")


def _create_temp(dst: Path) -> tuple[Path, int]:
    """Create a new, empty temporary file next to ``dst``; returns its path and a write descriptor."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = _temp_name(dst)
        try:
            return tmp, os.open(tmp, _CREATE_FLAGS, 0o666)  # the umask applies, as for any new file
        except FileExistsError:  # a file or symlink already there: never touch it, pick another name
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name (is something planting files?)", str(dst.parent))


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable, where the OS lets a folder be opened and synced."""
    if os.name == "nt":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (where the OS can) while a temporary file is created and its name
    recorded, so that Ctrl-C or a kill cannot land between the two and leave the file behind."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _replace_on_success(dst: Path) -> Iterator[tuple[Path, int]]:
    """Yield ``(temporary path, write descriptor)``; on a clean exit fsync the file, rename it to
    ``dst`` and fsync the folder. On any exception the temporary file is removed."""
    tmp, fd, renamed = None, -1, False
    try:
        with _signals_held():
            tmp, fd = _create_temp(dst)
        yield tmp, fd
        if not stat.S_ISREG(os.lstat(tmp).st_mode):  # the writer must not have swapped the file
            raise OSError(errno.EINVAL, "temporary file was replaced while writing", str(tmp))
        os.fsync(fd)  # the writer may have used its own descriptor: same inode, so this syncs its data
        os.close(fd)
        fd = -1
        os.replace(tmp, dst)
        renamed = True
        _fsync_folder(dst.parent)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None and not renamed:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _write_error(dst: Path, exc: OSError) -> LfqError:
    return LfqError(f"cannot write {dst}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_output(dst: str | os.PathLike) -> Iterator[Path]:
    """Yield the path of a new, empty temporary file next to ``dst`` (same extension) for a writer
    that opens files by name; it becomes ``dst`` only if the block finishes. An ``OSError`` is
    reported as :class:`LfqError` (``cannot write DST: ...``)."""
    dst = Path(dst)
    try:
        with _replace_on_success(dst) as (tmp, _):
            yield tmp
    except OSError as exc:
        raise _write_error(dst, exc) from None


@contextlib.contextmanager
def atomic_open(dst: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file open for writing; its content becomes ``dst`` only if the block finishes
    (flushed and fsynced first). An ``OSError`` is reported as :class:`LfqError`."""
    dst = Path(dst)
    try:
        with _replace_on_success(dst) as (_, fd), os.fdopen(fd, "wb", closefd=False) as handle:
            yield handle
            handle.flush()
    except OSError as exc:
        raise _write_error(dst, exc) from None


def atomic_write_bytes(dst: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``dst`` atomically."""
    with atomic_open(dst) as handle:
        handle.write(data)


def atomic_write_text(dst: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``dst`` atomically."""
    atomic_write_bytes(dst, text.encode("utf-8"))
