"""The all-reduce behind `tyllm.die_all_reduce`, for dies as threads or as processes.

Each die worker binds its group member to its own thread (`bind_member`); the packed function
that compiled graphs call looks the member up there. Sums run in die order, so every die gets
bit-identical results.
"""

import threading
from contextlib import contextmanager
from multiprocessing import shared_memory

import torch
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
        total = sum_in_die_order(g.slots)
        g.barrier.wait()  # nobody may overwrite a slot before everyone has summed
        return total


def sum_in_die_order(slots: list[torch.Tensor]) -> torch.Tensor:
    total = slots[0].clone()
    for other in slots[1:]:
        total += other
    return total


class SharedMemoryGroup:
    """N dies, one process each: a shared buffer with one slot per die and a process barrier.

    Made by the parent (`create`), handed to each die process, which attaches by name. An
    all-reduce is: write my slot, wait, sum all slots in die order, wait (so no slot is
    overwritten while another die still reads it). Far less latency than gloo over loopback
    for the small hidden-state tensors of a decode step.
    """

    def __init__(self, name: str, size: int, slot_bytes: int, barrier):
        self.name, self.size, self.slot_bytes, self.barrier = name, size, slot_bytes, barrier
        self._shm: shared_memory.SharedMemory | None = None

    @classmethod
    def create(cls, size: int, slot_bytes: int, barrier) -> "SharedMemoryGroup":
        shm = shared_memory.SharedMemory(create=True, size=size * slot_bytes)
        group = cls(shm.name, size, slot_bytes, barrier)
        group._shm = shm
        return group

    def __getstate__(self):
        return {**self.__dict__, "_shm": None}

    def member(self, rank: int) -> "SharedMemoryMember":
        self._shm = self._shm or shared_memory.SharedMemory(name=self.name)
        return SharedMemoryMember(self, rank, self._shm)

    def unlink(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None


class SharedMemoryMember:
    def __init__(self, group: SharedMemoryGroup, rank: int, shm: shared_memory.SharedMemory):
        self.group, self.rank, self.shm = group, rank, shm
        self.views: dict[torch.dtype, torch.Tensor] = {}

    def _slots(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in self.views:
            flat = torch.frombuffer(self.shm.buf, dtype=dtype)
            self.views[dtype] = flat.view(self.group.size, -1)
        return self.views[dtype]

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() * x.element_size() > self.group.slot_bytes:
            raise RuntimeError(f"all-reduce of {x.numel()} elements exceeds the shared slot of "
                               f"{self.group.slot_bytes} bytes")
        slots = self._slots(x.dtype)[:, :x.numel()]
        slots[self.rank].copy_(x.reshape(-1))
        self.group.barrier.wait()
        total = sum_in_die_order(list(slots))
        self.group.barrier.wait()
        return total.view_as(x)


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
