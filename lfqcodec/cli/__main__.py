"""``python -m lfqcodec.cli``: the ``lfqcodec`` command."""

from .commands import main

main()
