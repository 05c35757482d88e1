"""Pictures in and out: PyAV video reading and writing, the threads that read ahead and write behind.

May import: lfqcodec.base, lfqcodec.model, lfqcodec.entropy, lfqcodec.format.
"""
