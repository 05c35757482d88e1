"""The command line, a thin layer over the others: codec commands, training commands, ``bench``,
tokens, and the shared options and one-line errors.

May import: everything below it.
"""
