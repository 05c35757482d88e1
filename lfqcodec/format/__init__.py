"""The ``.lfq`` file in code (docs/FORMAT.md is the spec): header, records, the chunk index, the reader
and writer, bit packing, the strict scan and salvage.

May import: lfqcodec.base, lfqcodec.entropy (the writer and reader code bits with the context model).
"""
