"""The die all-reduce, for dies as threads or as processes: a plain entry point of the runtime.

Each die worker binds its group member to its own thread (`bind_member`); `all_reduce(x)` sums
the dies' contributions on the member bound there, in die order, so every die gets
bit-identical results. A backend whose programs call the all-reduce from native code (the
emulated CPU backend's `tyllm.die_all_reduce` packed function) calls the native library's C
entry point `tyllm_all_reduce` on the same binding, and this module's `all_reduce` for a thread
bound to a Python group.

`thread_group` / `process_group` return a `NativeGroup` (csrc/all_reduce.cc: no Python and no
interpreter lock between the dies, one implementation for threads and processes) when the
native library builds here, else the Python groups below, which are also the reference.
"""

import ctypes
import mmap
import threading
from contextlib import contextmanager
from multiprocessing import shared_memory

import torch

from tyllm.runtime.native import native_library

NATIVE_DTYPES = (torch.float32, torch.float16)  # what the native library sums
DLPACK_FLOAT = 2  # DLPack's dtype code of floats, as the library takes dtypes
_bound = threading.local()


class Member:
    """A die's place in a group; binds itself to the calling thread, where `all_reduce`
    finds it."""

    def bind(self) -> None:
        _bound.member = self

    def unbind(self) -> None:
        _bound.member = None

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


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

    def unlink(self) -> None:
        """Nothing to release."""

    detach = unlink


class ThreadMember(Member):
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

    def detach(self) -> None:
        """Nothing: the members' tensor views keep the mapping until the process exits."""

    def unlink(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None


class SharedMemoryMember(Member):
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


class IdentityMember(Member):
    """One die on its own: the all-reduce of a single contribution (used by `tyllm verify`)."""

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


class NativeGroup:
    """N dies reducing in native code over one block of memory: a header (counters of the
    barrier) and one 64-byte aligned slot per die. `shared`: a named shared-memory block that
    spawned die processes attach to by name; else anonymous memory of this process (threads,
    which then need no /dev/shm)."""

    def __init__(self, lib, size: int, slot_bytes: int, shared: bool):
        self.size, self.slot_bytes = size, -(-slot_bytes // 64) * 64
        nbytes = lib.tyllm_group_bytes(size, self.slot_bytes)
        self._shm = shared_memory.SharedMemory(create=True, size=nbytes) if shared else None
        self.name, self._owner = (self._shm.name if shared else None), True
        self._memory = self._shm.buf if shared else mmap.mmap(-1, nbytes)
        self._anchor = ctypes.c_char.from_buffer(self._memory)  # its address, for the library
        lib.tyllm_group_init(self.address, size, self.slot_bytes)

    def __getstate__(self):  # a die process attaches by name
        if self.name is None:
            raise TypeError("a thread group's memory cannot cross processes")
        return {"name": self.name, "size": self.size, "slot_bytes": self.slot_bytes}

    def __setstate__(self, state):
        self.__dict__.update(state, _shm=None, _owner=False, _memory=None, _anchor=None)

    @property
    def address(self) -> int:
        if self._anchor is None:
            if self.name is None:
                raise RuntimeError("this die group was released; load the tree again")
            self._shm = shared_memory.SharedMemory(name=self.name)
            self._memory = self._shm.buf
            self._anchor = ctypes.c_char.from_buffer(self._memory)
        return ctypes.addressof(self._anchor)

    def member(self, rank: int) -> "NativeMember":
        return NativeMember(self, rank)

    def abort(self) -> None:
        required_native().tyllm_group_abort(self.address)

    def detach(self) -> None:
        """Unmaps the block (a die process, when its die stops)."""
        self._anchor = None
        if self._shm is not None:
            self._shm.close()
        elif isinstance(self._memory, mmap.mmap):
            self._memory.close()
        self._shm = self._memory = None

    def unlink(self) -> None:
        shm, owner = self._shm, self._owner
        self.detach()
        if shm is not None and owner:
            shm.unlink()


class NativeMember(Member):
    def __init__(self, group: NativeGroup, rank: int):
        self.group, self.rank = group, rank

    def bind(self) -> None:
        required_native().tyllm_bind(self.group.address, self.rank)
        super().bind()

    def unbind(self) -> None:
        required_native().tyllm_bind(None, -1)
        super().unbind()

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Through the C entry point, which releases the interpreter lock while it waits."""
        x = x.contiguous()
        out = torch.empty_like(x)
        code = DLPACK_FLOAT if x.dtype in NATIVE_DTYPES else 0  # the library refuses others
        lib = required_native()
        status = lib.tyllm_all_reduce(x.data_ptr(), out.data_ptr(), x.numel(), code,
                                      8 * x.element_size())
        if status != 0:
            raise RuntimeError(lib.tyllm_status_text(status).decode())
        return out


def required_native():
    """The native library, in a process that joins a native group (a die process)."""
    lib = native_library()
    if lib is None:
        raise RuntimeError("this die process cannot load the native all-reduce the others use "
                           "(see the warning above); load the tree with the Python all-reduce "
                           "(native=False) or fix the C++ build.")
    return lib


def thread_group(size: int, slot_bytes: int, native: bool = True) -> ThreadGroup | NativeGroup:
    lib = native_library() if native else None
    return NativeGroup(lib, size, slot_bytes, shared=False) if lib else ThreadGroup(size)


def process_group(size: int, slot_bytes: int, ctx,
                  native: bool = True) -> SharedMemoryGroup | NativeGroup:
    """`ctx`: the multiprocessing context of the die processes (for the Python group's barrier)."""
    lib = native_library() if native else None
    if lib:
        return NativeGroup(lib, size, slot_bytes, shared=True)
    return SharedMemoryGroup.create(size, slot_bytes, ctx.Barrier(size))


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """The die all-reduce of `x` on the member bound to this thread (the sum over the dies, in
    die order); for backends whose programs call it from Python between kernels."""
    member = getattr(_bound, "member", None)
    if member is None:
        raise RuntimeError("the die all-reduce ran outside a die worker: load the tree with "
                           "tyllm.runtime.load().")
    return member.all_reduce(x)


@contextmanager
def bind_member(member: Member):
    member.bind()
    try:
        yield member
    finally:
        member.unbind()
