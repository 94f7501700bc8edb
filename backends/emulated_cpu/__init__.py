"""The emulated multi-die CPU backend: TVM Relax lowered for the host CPU through LLVM."""

from pathlib import Path

from tyllm.backends.emulated_cpu import probe
from tyllm.backends.emulated_cpu.lower import TargetSpec, lower_to_library, lower_windows
from tyllm.backends.emulated_cpu.program import DieProgram, pin_threads

__all__ = ["BACKEND", "DieProgram", "TargetSpec", "lower_to_library", "lower_windows"]


class EmulatedCpu:
    name = "emulated_cpu"
    library_suffix = ".so"
    library_magic = b"\x7fELF"  # a shared object
    tree_packages = ("apache-tvm",)  # the .so files are TVM modules

    def target(self, num_cores: int) -> TargetSpec:
        return TargetSpec(num_cores=num_cores)

    def load(self, library: Path, params: list) -> DieProgram:
        return DieProgram(library, params)

    def pin_threads(self, cores: set[int]) -> None:
        pin_threads(cores)

    def check(self) -> list[tuple[bool, str]]:
        return probe.check()


BACKEND = EmulatedCpu()
