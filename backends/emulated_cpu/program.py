"""A compiled die graph loaded for execution: TVM VM over the `.so`, parameters bound by name;
and the placement of the TVM threads that run it."""

from pathlib import Path

import torch
import tvm
from tvm import relax
from tyllm.backends.emulated_cpu.all_reduce import register_all_reduce

ALIGNMENT = 64  # bytes; TVM refuses less aligned buffers


def aligned(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    return t if t.data_ptr() % ALIGNMENT == 0 else t.clone()


def to_tvm(t: torch.Tensor):
    return tvm.runtime.from_dlpack(aligned(t))


def to_torch(x) -> torch.Tensor:
    return torch.from_dlpack(x)


class DieProgram:
    """One graph of one die. Inputs and outputs are torch tensors, shared with TVM zero-copy."""

    def __init__(self, library: Path, params: list[torch.Tensor]):
        register_all_reduce()  # the VM resolves the graph's packed functions when it loads
        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
        self._main = self._vm["main"]
        # Dies run as threads of one process and meet in native all-reduces: never hold the
        # interpreter lock while a graph runs (tvm_ffi's default, made independent of it).
        self._main.release_gil = True
        self._torch_params = [aligned(p) for p in params]  # TVM views this memory: keep it
        self._params = [to_tvm(p) for p in self._torch_params]

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        out = self._main(*[to_tvm(t) for t in inputs], *self._params)
        return [to_torch(o) for o in out]


def pin_threads(cores: set[int]) -> None:
    """The TVM thread pool of the calling thread (whose affinity the runtime set to `cores`):
    one worker per core (TVM's own default on x86 halves the core count, guessing
    hyper-threads)."""
    # -2: one TVM worker per listed core (the pool is per calling thread)
    tvm.get_global_func("runtime.config_threadpool")(-2, len(cores), [str(c) for c in cores])
