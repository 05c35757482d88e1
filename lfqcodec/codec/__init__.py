"""The chunk-level codec: ``Codec`` (frames <-> bits of one chunk), chunking at scene cuts, the bit
search and the decoder update it runs, decoding a file, file info and tokens.

May import: lfqcodec.base, .model, .entropy, .format, .io.
"""
