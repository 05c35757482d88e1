"""The encoder presets: which search and which decoder update pay for their bytes, per run of chunks,
and fitting the update. They drive a ``Codec`` from below ``api``.

May import: lfqcodec.base, .model, .entropy, .format, .io, .codec.
"""
