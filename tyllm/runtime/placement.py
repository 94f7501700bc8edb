"""Thread placement of emulated dies: each die gets its own cores (oversubscribed cores run
5-25x slower), as many as the machine has per die, at least one. The tree's backend places the
threads its kernels run on (`Backend.pin_threads`)."""

import os

import torch


def threads_per_die(dies: int) -> int:
    return max(1, (os.cpu_count() or 1) // dies)


def die_cores(die: int, dies: int) -> set[int]:
    cores = sorted(os.sched_getaffinity(0))
    per = threads_per_die(dies)
    return {cores[(die * per + i) % len(cores)] for i in range(per)}


def pin_current_thread(die: int, dies: int, backend) -> None:
    """Pins the calling thread (and the kernel threads it starts) to the die's cores."""
    pin_to_cores(die_cores(die, dies), backend)


def pin_to_cores(cores: set[int], backend) -> None:
    """The calling thread, and the threads `backend`'s kernels start from it, run on `cores`."""
    os.sched_setaffinity(0, cores)
    backend.pin_threads(cores)


def pin_process(die: int, dies: int, backend) -> None:
    pin_current_thread(die, dies, backend)
    torch.set_num_threads(threads_per_die(dies))
