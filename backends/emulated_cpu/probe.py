"""What this backend needs of the installation (`tyllm doctor`): TVM compiles y = x + 1 with
LLVM, exports it with the local C compiler, loads and runs it."""

import tempfile
from pathlib import Path

import numpy as np
import tvm
from tvm import te
from tyllm.backends.probe import probe_findings


def run_probe(x: np.ndarray) -> np.ndarray:
    a = te.placeholder(x.shape, "float32", name="x")
    y = te.compute(x.shape, lambda i: a[i] + 1.0, name="y")
    out = tvm.runtime.tensor(np.zeros_like(x))
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "probe.so")
        tvm.compile(te.create_prim_func([a, y]), target="llvm").export_library(path)
        tvm.runtime.load_module(path)["main"](tvm.runtime.tensor(x), out)
    return out.numpy()


def check() -> list[tuple[bool, str]]:
    return probe_findings(
        run_probe, works="TVM compiles, exports with the C compiler, loads and runs a module",
        wrong="TVM compiled a module that computes wrong results",
        cannot="TVM cannot compile and load a module: {}. Check that gcc is installed "
               "(apt-get install gcc g++).")
