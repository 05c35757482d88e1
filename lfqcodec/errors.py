"""The one exception type users of lfqcodec need to catch."""


class LfqError(Exception):
    """A problem with the user's input or environment, reported as one line.

    The CLI prints ``str(error)`` and exits non-zero; it never shows a traceback for these.
    """


class FormatError(LfqError):
    """A ``.lfq`` file is malformed, truncated, corrupt or of an unsupported version."""


class ModelError(LfqError):
    """A model file is missing, malformed, or does not match the one a ``.lfq`` file names."""
