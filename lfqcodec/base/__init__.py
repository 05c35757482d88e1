"""The bottom layer every other one may use: the error types, atomic file output, picture metrics.

Imports nothing from lfqcodec.
"""
