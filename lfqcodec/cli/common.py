"""What every ``lfqcodec`` command shares: the one-line error handling and common options.

Every error a user can act on ends in one line ``lfqcodec: error: ...`` and exit status 1: failures
inside a command through :func:`handle_errors`, and usage errors (a bad option value, a missing
argument, an unknown option or command) through :class:`OneLineErrorGroup`, the ``lfqcodec`` group,
so a command added to it later gets the same without doing anything."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from ..base.errors import LfqError


# readable=False: an unreadable input is reported by the API as one line (exit 1), not as a usage error
INPUT_PATH = click.Path(readable=False, path_type=Path)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, so that it unwinds as Ctrl-C does (progress bar closed,
    temporary outputs removed) before its one line is printed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.code = 128 + signum


class FiniteRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf`` (which compare as inside any range)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"lfqcodec: error: {message}", err=True)
    sys.exit(code)


class OneLineUsageError(click.ClickException):
    """A Click usage error told in one line, exit status 1, as every other error of the CLI."""

    exit_code = 1

    def show(self, file=None) -> None:
        click.echo(f"lfqcodec: error: {self.message}", err=True)


def _one_line(exc: click.UsageError) -> OneLineUsageError:
    """``exc`` (Click's three-line usage block) as one line: its message, lower-cased like the CLI's
    other errors, and where to find the command's help."""
    text = " ".join(exc.format_message().split()).rstrip(".").replace(". Did you mean", "; did you mean")
    text = text[:1].lower() + text[1:]
    where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
    return OneLineUsageError(text + where)


class OneLineErrorGroup(click.Group):
    """A group whose usage errors, its own and every subcommand's, are one line with exit status 1.

    Click raises them while it parses the group's arguments (:meth:`make_context`) and a
    subcommand's (inside :meth:`invoke`); both are caught here. ``lfqcodec`` with no arguments shows
    the help, with exit status 1 too."""

    def parse_args(self, ctx, args):
        if not args and not ctx.resilient_parsing:  # the help, with every usage error's status (any Click)
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(1)
        return super().parse_args(ctx, args)

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise _passed_or_one_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _passed_or_one_line(exc) from None


def _passed_or_one_line(exc: click.UsageError) -> click.ClickException:
    no_args_is_help = getattr(click.exceptions, "NoArgsIsHelpError", ())  # Click >= 8.2: shows the help
    return exc if no_args_is_help and isinstance(exc, no_args_is_help) else _one_line(exc)


def handle_errors(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LfqError as exc:
            _fail(str(exc))
        except Terminated as exc:
            _fail("terminated", exc.code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:  # the reader of stdout went away (| head): stop quietly, as other tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except MemoryError:
            _fail("out of memory (try a smaller --window or --gop)")
        except Exception as exc:
            if os.environ.get("LFQCODEC_DEBUG"):
                raise
            _fail(f"internal error: {type(exc).__name__}: {exc} (set LFQCODEC_DEBUG=1 for details)")

    return wrapper


def _device_option(help_text: str):
    return click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                        help=f"Where the network runs; auto picks CUDA when present. {help_text}")  # fmt: skip


device_option = _device_option("Plain encoding gives the same bits on either (up to latents within rounding of zero); "
                               "--search bits depend on it.")  # fmt: skip
decode_device_option = _device_option("A file made on either decodes on either (pixels may differ by rounding).")
quiet_option = click.option(
    "-q", "--quiet", is_flag=True, help="No progress bar or summary line (errors and warnings are still printed).",
)  # fmt: skip


class QualityOption(click.Option):
    """``--quality``, whose help names the bits per token of each quality, read from the default model's
    stored config (its file header, not its weights) when the help is shown."""

    def get_help_record(self, ctx):
        original = self.help
        self.help = (original or "").replace("{bits}", _quality_bits())
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = original


def _quality_bits() -> str:
    """`` (lfq-base: low 4, medium 16, high 32)``, or nothing where the default model cannot be read."""
    import json

    try:
        from safetensors import safe_open

        from ..model.checkpoint import DEFAULT_MODEL, resolve_model_path

        with safe_open(str(resolve_model_path(None)), framework="np") as handle:
            bits = json.loads((handle.metadata() or {})["lfqcodec.config"])["quality_bits"]
    except Exception:  # the help never fails over it
        return ""
    ordered = sorted(bits.items(), key=lambda item: item[1])
    return f" ({DEFAULT_MODEL}: " + ", ".join(f"{name} {n}" for name, n in ordered) + ")"


def _parse_size(ctx, param, value: str) -> int:
    """``1536M``, ``2G``, ``800000K`` or plain bytes -> bytes."""
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    try:
        number = float(text[:-1] if scale > 1 else text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a size like 1536M or 2G") from None
    if not 0 <= number * scale < 1 << 50:
        raise click.BadParameter(f"{value!r} is out of range")
    return int(number * scale)
