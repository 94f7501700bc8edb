"""Giving freed heap memory back to the operating system, and this process's peak RSS."""

import ctypes
import functools
import resource


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


def peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM: unlike getrusage's, it is not inherited from
    the parent that started a worker process)."""
    try:
        with open("/proc/self/status") as status:
            line = next(x for x in status if x.startswith("VmHWM"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
