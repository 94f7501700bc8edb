"""Backends: how a captured graph is lowered for a target and how a compiled die program runs.

The interface, as code: a `Backend` makes the `Target` a compile lowers for (`Target.lower`:
captured program -> library file; `Target.lower_windows`: one static library per KV window) and
loads a library with its parameters into a callable die program (`Backend.load`). The graphs
call the die all-reduce as the packed function `tyllm.die_all_reduce` (tyllm/capture/ops.py),
which the runtime provides. The compiler and the runtime reach backends only through
`get_backend(name)`; a tree records its backend's name in config.json and is loaded with it.

The emulated CPU backend (`backends.emulated_cpu`, TVM Relax through LLVM) is the one tyllm
ships; a hardware backend plugs in beside it as a package exposing `BACKEND` and one line in
`REGISTRY`.
"""

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

DEFAULT = "emulated_cpu"
REGISTRY = {"emulated_cpu": "tyllm.backends.emulated_cpu",  # name -> package exposing BACKEND
            "onnx_reference": "tyllm.backends.onnx_reference"}


class Target(Protocol):
    """What a compile lowers for; `as_json` is everything a compiled program depends on.
    `weight_panels`: the panel width (tyllm.models.panels) the target's kernels read linear
    weights in, or None for plain [N, K] weights."""

    weight_panels: int | None

    def as_json(self) -> dict: ...

    def lower(self, program, library: Path) -> list[str]:
        """Compiles a captured program into `library`; returns the parameter binding order."""

    def lower_windows(self, program, libraries: dict[int, Path]) -> list[str]:
        """Compiles a program whose one symbolic size is its KV window into one library per
        window (window -> path); returns the parameter binding order."""


class Backend(Protocol):
    name: str
    library_suffix: str  # the extension of its library files (".so" for a shared library)

    def target(self, num_cores: int) -> Target:
        """The target of this machine, for graphs that may use `num_cores` cores."""

    def load(self, library: Path, params: list) -> Callable:
        """A die program: called with the graph's inputs (torch tensors), returns its
        outputs; `params` are bound in the graph's parameter order."""


class UnknownBackend(ValueError):
    pass


def get_backend(name: str) -> Backend:
    if name not in REGISTRY:
        raise UnknownBackend(f"Backend {name!r} is not one tyllm has: choose one of "
                             f"{sorted(REGISTRY)}.")
    return importlib.import_module(REGISTRY[name]).BACKEND


def library_suffix(name: str) -> str:
    return get_backend(name).library_suffix
