"""Tokens at scale and as a library: ``lfqcodec tokenize`` (local and Ray workers, settings, Parquet
shards), token files, the ``Tokenizer`` object and detokenizing.

May import: every layer up to lfqcodec.presets.
"""
