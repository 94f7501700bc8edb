"""Giving freed heap memory back to the operating system."""

import ctypes
import functools


@functools.cache
def _malloc_trim():
    return getattr(ctypes.CDLL(None), "malloc_trim", None)  # the C library this process uses


def return_free_memory() -> None:
    """Asks glibc to release the free parts of its heap (no-op elsewhere). Tensors under the
    mmap threshold (a layer's weights) go back to the heap when freed, not to the system; a
    compile trims after dropping a die's weights so its peak RSS stays one die's weights."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
