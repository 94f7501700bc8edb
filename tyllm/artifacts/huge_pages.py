"""Memory that a decode step streams (weights, KV caches), asked to be backed by transparent
huge pages. A step reads every weight once: with 4 KiB pages each 4 KiB of it costs a TLB
walk, and on this project's build machine (THP on request only, `madvise`) a SmolLM2 step took
6-13 % longer in 4 KiB pages (docs/PERFORMANCE.md). Where the kernel never gives huge pages
the request is a no-op."""

import ctypes
import math
import sys

import torch

MADV_HUGEPAGE = 14  # Linux
HUGE_PAGE = 2 << 20
PAGE = 4096


def huge_page_bytes(size: int) -> torch.Tensor:
    """`size` uninitialised bytes (torch's 64-byte alignment), not yet touched, with huge
    pages requested for them when they span one."""
    buffer = torch.empty(size, dtype=torch.uint8)
    if size >= HUGE_PAGE and sys.platform == "linux":
        start = buffer.data_ptr() // PAGE * PAGE
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(buffer.data_ptr() + size - start),
                     MADV_HUGEPAGE)
    return buffer


def huge_page_zeros(shape, dtype: torch.dtype) -> torch.Tensor:
    """torch.zeros(shape, dtype=dtype) in memory from `huge_page_bytes`."""
    return huge_page_bytes(math.prod(shape) * dtype.itemsize).view(dtype).reshape(shape).zero_()
