"""What every ``lfqcodec`` command shares: the one-line error handling and common options."""

from __future__ import annotations

import functools
import os
import sys

import click

from .errors import LfqError


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"lfqcodec: error: {message}", err=True)
    sys.exit(code)


def handle_errors(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LfqError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory (try a smaller --window or --gop)")
        except Exception as exc:
            if os.environ.get("LFQCODEC_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set LFQCODEC_DEBUG=1 for details)")

    return wrapper


device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where the network runs; auto picks CUDA when present. Plain encoding gives the same bits on either (up to "
         "latents within rounding of zero); --search bits depend on it.",
)  # fmt: skip
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
