"""The all-reduce behind `tyllm.die_all_reduce`, for dies as threads or as processes.

Each die worker binds its group member to its own thread (`bind_member`); the packed function
that compiled graphs call looks the member up there. Sums run in die order, so every die gets
bit-identical results.
"""

import threading
from contextlib import contextmanager

import torch
import torch.distributed as dist
import tvm

from tyllm.capture.ops import ALL_REDUCE_PACKED_FUNC

_bound = threading.local()


class ThreadGroup:
    """N dies in one process, one thread each."""

    def __init__(self, size: int):
        self.size = size
        self.slots: list[torch.Tensor | None] = [None] * size
        self.barrier = threading.Barrier(size)

    def member(self, rank: int) -> "ThreadMember":
        return ThreadMember(self, rank)

    def abort(self) -> None:
        self.barrier.abort()


class ThreadMember:
    def __init__(self, group: ThreadGroup, rank: int):
        self.group, self.rank = group, rank

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        g = self.group
        g.slots[self.rank] = x  # read by the others while this thread waits below
        g.barrier.wait()
        total = g.slots[0].clone()
        for other in g.slots[1:]:
            total += other
        g.barrier.wait()  # nobody may overwrite a slot before everyone has summed
        return total


class GlooMember:
    """One die per process; the process group is set up by the worker (torch.distributed)."""

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total


class IdentityMember:
    """One die on its own: the all-reduce of a single contribution (used by `tyllm verify`)."""

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def _die_all_reduce(x, out) -> None:
    member = getattr(_bound, "member", None)
    if member is None:
        raise RuntimeError("tyllm.die_all_reduce ran outside a die worker: load the tree with "
                           "tyllm.runtime.load().")
    torch.from_dlpack(out).copy_(member.all_reduce(torch.from_dlpack(x)))


def register_all_reduce() -> None:
    tvm.register_global_func(ALL_REDUCE_PACKED_FUNC, _die_all_reduce, override=True)


@contextmanager
def bind_member(member):
    register_all_reduce()
    _bound.member = member
    try:
        yield member
    finally:
        _bound.member = None
