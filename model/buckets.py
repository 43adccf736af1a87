"""The shapes a static decode batch comes in: rows and KV slots rounded up to a few buckets, so one
captured step serves many batches (model/decoder.py's ``StaticDecoder``; the memory plan sizes them)."""
from __future__ import annotations


ROW_BUCKETS = (2, 4, 8, 16)  # rows of a static decode batch (a CFG item takes 2)
MIN_LENGTH_BUCKET = 64


def row_bucket(n: int, buckets: tuple[int, ...] = ROW_BUCKETS) -> int:
    """The smallest row bucket holding ``n`` rows (past the largest: its multiples)."""
    for b in buckets:
        if n <= b:
            return b
    top = buckets[-1]
    return -(-n // top) * top


def length_bucket(n: int) -> int:
    """The smallest power of two >= ``n`` (at least MIN_LENGTH_BUCKET): KV slots of a static batch."""
    b = MIN_LENGTH_BUCKET
    while b < n:
        b *= 2
    return b
