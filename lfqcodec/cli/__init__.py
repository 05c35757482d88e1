"""The command line, a thin layer over the others: codec commands, training commands, ``bench``,
tokens, and the shared options and one-line errors.

May import: everything below it.
"""


def main(*args, **kwargs):
    """The ``lfqcodec`` command, as console scripts call it: the commands (and torch under them) are
    loaded here, so that a Ctrl-C while they load ends in one line too, as it does once running."""
    import sys

    try:
        from .commands import main as command
    except KeyboardInterrupt:
        sys.stderr.write("lfqcodec: error: interrupted\n")
        raise SystemExit(130) from None
    return command(*args, **kwargs)
