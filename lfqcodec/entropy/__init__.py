"""The context model of the bits and its range coder: the checkerboard geometry, the integer network
(coder 2), fitting that network, ``.entropy`` files.

May import: lfqcodec.base.
"""
