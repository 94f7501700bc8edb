"""The emulated multi-die CPU backend: TVM Relax lowered for the host CPU through LLVM."""

from backends.emulated_cpu.lower import TargetSpec, lower_to_library, lower_windows
from backends.emulated_cpu.program import DieProgram

__all__ = ["DieProgram", "TargetSpec", "lower_to_library", "lower_windows"]
