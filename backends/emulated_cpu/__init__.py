"""The emulated multi-die CPU backend: TVM Relax lowered for the host CPU through LLVM."""

from pathlib import Path

from tyllm.backends.emulated_cpu.lower import TargetSpec, lower_to_library, lower_windows
from tyllm.backends.emulated_cpu.program import DieProgram

__all__ = ["BACKEND", "DieProgram", "TargetSpec", "lower_to_library", "lower_windows"]


class EmulatedCpu:
    name = "emulated_cpu"
    library_suffix = ".so"

    def target(self, num_cores: int) -> TargetSpec:
        return TargetSpec(num_cores=num_cores)

    def load(self, library: Path, params: list) -> DieProgram:
        return DieProgram(library, params)


BACKEND = EmulatedCpu()
