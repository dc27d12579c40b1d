"""A Ray Train worker's memory: what it measures of itself, and how it keeps its heap from holding on."""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Iterator

import psutil

M_MMAP_THRESHOLD = -3
"""glibc's `mallopt` parameter (malloc.h)."""
LARGE_BLOCK_BYTES = 4 * 1024**2
HEAP_BLOCK_BYTES = 32 * 1024**2
"""The highest threshold glibc raises itself to on 64-bit systems: where a training loop's own threshold settles."""


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def _mmap_threshold(size: int) -> None:
    if (libc := _glibc()) is not None:  # elsewhere there is nothing to set
        libc.mallopt(M_MMAP_THRESHOLD, size)


@contextlib.contextmanager
def large_blocks_mapped() -> Iterator[None]:
    """Within it, every allocation of `LARGE_BLOCK_BYTES` or more gets its own mapping, returned to the system when
    freed; after it, blocks up to `HEAP_BLOCK_BYTES` come from the heap, as glibc would settle on by itself.

    For a features pass: its batches are large, and glibc raises its mmap threshold each time it frees such a
    block, after which they come from the heap, which fragments and does not shrink. One text features pass over a
    worker's 10,880 rows took it from 444 to 791 MB private; in one process each further pass over those rows added
    ~90 MB (over 5,440 rows, 17 MB; with a 4 MB threshold, nothing). Not for training, which allocates such blocks
    every step: each mapped one needs fresh pages (a 1 MB threshold made a MiniLM training step 30% slower)."""
    _mmap_threshold(LARGE_BLOCK_BYTES)
    try:
        yield
    finally:
        _mmap_threshold(HEAP_BLOCK_BYTES)


def private_mb() -> float:
    """This process's own resident memory, without the shared pages it maps (Ray's object store, whose blocks a
    streamed shard passes through, is a fixed, spillable budget of the node, not this worker's)."""
    info = psutil.Process().memory_info()
    return (info.rss - info.shared) / 1024**2
