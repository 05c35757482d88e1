"""``python -m lfqcodec.cli``: the ``lfqcodec`` command."""

from . import main

main()
