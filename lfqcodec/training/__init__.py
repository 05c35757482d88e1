"""Training the tokenizer and the entropy model: the loop, data and packs, validation, distillation,
surgery, the prepared GPU run, int8 calibration, cached training tokens, the held-out clips.

May import: every layer up to lfqcodec.tokens.
"""
