"""Thread placement of emulated dies: each die gets its own cores (oversubscribed cores run
5-25x slower), as many as the machine has per die, at least one."""

import os

import torch
import tvm


def threads_per_die(dies: int) -> int:
    return max(1, (os.cpu_count() or 1) // dies)


def die_cores(die: int, dies: int) -> set[int]:
    cores = sorted(os.sched_getaffinity(0))
    per = threads_per_die(dies)
    return {cores[(die * per + i) % len(cores)] for i in range(per)}


def pin_current_thread(die: int, dies: int) -> None:
    """Pins the calling thread (and the TVM/torch threads it starts) to the die's cores."""
    pin_to_cores(die_cores(die, dies))


def pin_to_cores(cores: set[int]) -> None:
    """The calling thread, and the TVM pool it starts, run on `cores`: one TVM worker per core
    (TVM's own default on x86 halves the core count, guessing hyper-threads)."""
    os.sched_setaffinity(0, cores)
    # -2: one TVM worker per listed core (the pool is per calling thread)
    tvm.get_global_func("runtime.config_threadpool")(-2, len(cores), [str(c) for c in cores])


def pin_process(die: int, dies: int) -> None:
    pin_current_thread(die, dies)
    torch.set_num_threads(threads_per_die(dies))
