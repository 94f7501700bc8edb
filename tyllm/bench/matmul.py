"""The prefill matmul: GFLOP/s of a linear lowered by the backend (TVM with tyllm's schedule
rules, the weight in the backend's panels as a tree stores it) against torch's own matmul
(MKL/oneDNN), on the model's shapes, at the same rows and threads, each with its weight hot in
cache."""

import tempfile
from pathlib import Path

import torch

from backends.emulated_cpu import DieProgram, TargetSpec, lower_to_library
from tyllm.bench.timing import median_seconds
from tyllm.capture.export import export_module
from tyllm.models.decoder import Linear
from tyllm.models.panels import to_panels


def model_shapes(hidden: int, intermediate: int) -> dict[str, tuple[int, int]]:
    """(in, out) of a decoder layer's linears: q/o, gate/up, down."""
    return {"attention": (hidden, hidden), "gate_up": (hidden, intermediate),
            "down": (intermediate, hidden)}


def gflops(rows: int, k: int, n: int, seconds: float) -> float:
    return 2 * rows * k * n / seconds / 1e9


def lowered_seconds(x: torch.Tensor, weight: torch.Tensor, target: TargetSpec) -> float:
    linear = Linear(*weight.shape, bias=False, dtype=weight.dtype, panels=target.weight_panels)
    linear.weight.data = to_panels(weight, linear.panels)
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "linear.so"
        lower_to_library(export_module(linear, {"x": x}), library, target)
        program = DieProgram(library, [linear.weight.data])
        return median_seconds(lambda: program(x), 10)


def linear_gflops(rows: int, k: int, n: int, threads: int) -> dict:
    torch.manual_seed(0)
    x, weight = torch.randn(rows, k), torch.randn(n, k) * 0.05
    torch.set_num_threads(threads)
    tyllm = gflops(rows, k, n, lowered_seconds(x, weight, TargetSpec(threads)))
    ref = gflops(rows, k, n, median_seconds(lambda: torch.nn.functional.linear(x, weight),
                                            10))
    return {"rows": rows, "in": k, "out": n, "tyllm_gflops": tyllm, "torch_gflops": ref,
            "fraction_of_torch": tyllm / ref}


def prefill_matmuls(hidden: int, intermediate: int, rows: list[int], threads: int) -> dict:
    return {f"{name}-{m}": linear_gflops(m, k, n, threads)
            for m in rows for name, (k, n) in model_shapes(hidden, intermediate).items()}
