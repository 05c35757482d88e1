"""Write outputs to a temporary name in the destination folder and rename on success."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import LfqError


def check_destination(dst: str | os.PathLike, overwrite: bool, sources: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Refuse to clobber an existing file (unless ``overwrite``) or to write over an input."""
    dst = Path(dst)
    if dst.is_dir():
        raise LfqError(f"output {dst} is a directory")
    for src in sources:
        if dst.exists() and Path(src).exists() and os.path.samefile(src, dst):
            raise LfqError(f"output {dst} is the same file as the input")
    if dst.exists() and not overwrite:
        raise LfqError(f"output {dst} exists (use -y/--overwrite to replace it)")
    if not dst.parent.is_dir():
        raise LfqError(f"output folder {dst.parent} does not exist")
    return dst


@contextlib.contextmanager
def atomic_output(dst: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dst`` (same extension); rename it to ``dst`` only if the
    block finishes. On any exception, Ctrl-C included, the temporary file is removed and ``dst`` is
    left as it was."""
    tmp = dst.with_name(f".{dst.stem}.partial-{os.getpid()}{dst.suffix}")
    try:
        yield tmp
        os.replace(tmp, dst)
    except OSError as exc:
        raise LfqError(f"cannot write {dst}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
