"""``lfqcodec bench``: metrics, BD-rate, a fresh process per encode and decode, VMAF, the table, the
RD plot and the side-by-side pictures.

May import: every layer up to lfqcodec.api.
"""
