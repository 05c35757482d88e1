"""The tokenizer network and running it: config, layers, LFQ quantizer, encoder / decoder, model files,
device choice, precision and int8 layers, tiled decoding.

May import: lfqcodec.base.
"""
