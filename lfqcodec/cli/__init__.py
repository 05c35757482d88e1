"""The command line, a thin layer over the others: codec commands, training commands, ``bench``,
tokens, and the shared options and one-line errors.

May import: everything below it.
"""


def __getattr__(name: str):
    """``lfqcodec.cli.main``: the entry point before the package was split by concern, which console
    scripts of installs made then (``pip install -e``) still import."""
    if name == "main":
        from .commands import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
