"""Backends: how a captured graph is lowered for a target and how a compiled die program runs.

The interface, as code: a `Backend` makes the `Target` a compile lowers for (`Target.lower`:
captured program -> library file; `Target.lower_windows`: one static library per KV window) and
loads a library with its parameters into a callable die program (`Backend.load`). The graphs
call the die all-reduce (tyllm/capture/ops.py); the runtime provides it as a plain entry point
(tyllm/runtime/collective.py and its C library), which each backend calls or wraps for its own
programs. The runtime places a die's threads through `Backend.pin_threads`; `tyllm doctor` asks
each backend what it needs (`Backend.check`). The compiler and the runtime reach backends only
through `get_backend(name)`; a tree records its backend's name in config.json and is loaded with
it.

The emulated CPU backend (`backends.emulated_cpu`, TVM Relax through LLVM) is the default, the
ONNX reference backend (`backends.onnx_reference`) the debugging twin; a hardware backend plugs
in beside them as a package exposing `BACKEND` and one line in `REGISTRY`.
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
    library_magic: bytes  # how its library files begin (a tree's libraries are checked on open)
    tree_packages: tuple[str, ...]  # distributions whose version a tree's libraries depend on

    def target(self, num_cores: int) -> Target:
        """The target of this machine, for graphs that may use `num_cores` cores."""

    def load(self, library: Path, params: list) -> Callable:
        """A die program: called with the graph's inputs (torch tensors), returns its
        outputs; `params` are bound in the graph's parameter order."""

    def pin_threads(self, cores: set[int]) -> None:
        """Makes the kernels the calling thread runs use `cores` (its affinity, already set by
        the runtime) and no more threads than that: a die's thread placement."""

    def check(self) -> list[tuple[bool, str]]:
        """What this installation needs to run the backend's programs, as (ok, sentence) pairs;
        a failing one names the fix."""


class UnknownBackend(ValueError):
    pass


def get_backend(name: str) -> Backend:
    if name not in REGISTRY:
        raise UnknownBackend(f"Backend {name!r} is not one tyllm has: choose one of "
                             f"{sorted(REGISTRY)}.")
    return importlib.import_module(REGISTRY[name]).BACKEND


def library_suffix(name: str) -> str:
    return get_backend(name).library_suffix
