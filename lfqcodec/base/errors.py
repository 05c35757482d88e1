"""The one exception type users of lfqcodec need to catch."""

NAME_CHARS = 80  # a name from a file (model name, metadata) is cut to this many characters in a message


def shorten(name: object, limit: int = NAME_CHARS) -> str:
    """``repr(name)``, cut to about ``limit`` characters: messages stay one short line whatever a file holds."""
    text = repr(name)
    return text if len(text) <= limit else f"{text[: limit - 20]}...({len(text)} characters)"


class LfqError(Exception):
    """A problem with the user's input or environment, reported as one line.

    The CLI prints ``str(error)`` and exits non-zero; it never shows a traceback for these.
    """


class FormatError(LfqError):
    """A ``.lfq`` file is malformed, truncated, corrupt or of an unsupported version."""


class ModelError(LfqError):
    """A model file is missing, malformed, or does not match the one a ``.lfq`` file names."""
