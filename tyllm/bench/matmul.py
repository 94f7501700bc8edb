"""The prefill matmul: GFLOP/s of a linear lowered by the backend (TVM with tyllm's schedule
rules, the weight in the backend's panels as a tree stores it) against torch's own matmul
(MKL/oneDNN), on the model's shapes, at the same rows and threads, each with its weight hot in
cache."""

import os
import tempfile
import time
from pathlib import Path

import torch

from tyllm.backends.emulated_cpu import BACKEND, DieProgram, TargetSpec, lower_to_library
from tyllm.bench.timing import median_seconds
from tyllm.cache import cache_root
from tyllm.capture.export import export_module
from tyllm.compile.report import output_into
from tyllm.models.decoder import Linear
from tyllm.models.panels import to_panels
from tyllm.runtime.placement import pin_to_cores

REPEATS = 20
SETTLE_SECONDS = 1.0  # for the spinning worker threads of the engine measured before to sleep


def model_shapes(hidden: int, intermediate: int) -> dict[str, tuple[int, int]]:
    """(in, out) of a decoder layer's linears: q/o, gate/up, down."""
    return {"attention": (hidden, hidden), "gate_up": (hidden, intermediate),
            "down": (intermediate, hidden)}


def gflops(rows: int, k: int, n: int, seconds: float) -> float:
    return 2 * rows * k * n / seconds / 1e9


def lowered_seconds(x: torch.Tensor, weight: torch.Tensor, target: TargetSpec) -> float:
    linear = Linear(*weight.shape, bias=False, dtype=weight.dtype, panels=target.weight_panels)
    linear.weight.data = to_panels(weight, linear.panels)
    log = cache_root() / "logs" / "bench-matmul.log"  # framework noise, as a compile's log
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        library = Path(tmp) / "linear.so"
        try:
            with output_into(log):
                lower_to_library(export_module(linear, {"x": x}), library, target)
        except Exception as e:
            e.add_note(f"tyllm: the lowering's log is {log}")
            raise
        program = DieProgram(library, [linear.weight.data])
        return median_seconds(lambda: program(x), REPEATS)


def operands(rows: int, k: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(rows, k), torch.randn(n, k) * 0.05


def torch_seconds(x: torch.Tensor, weight: torch.Tensor) -> float:
    return median_seconds(lambda: torch.nn.functional.linear(x, weight), REPEATS)


def prefill_matmuls(hidden: int, intermediate: int, rows: list[int], threads: int) -> dict:
    """Every shape through tyllm's kernel, then every shape through torch's: each engine's
    idle threads spin for a while after it runs, so the two never alternate."""
    shapes = {f"{name}-{m}": (m, k, n) for m in rows
              for name, (k, n) in model_shapes(hidden, intermediate).items()}
    torch.set_num_threads(threads)
    cores = set(sorted(os.sched_getaffinity(0))[:threads])
    pin_to_cores(cores, BACKEND)  # as a die's thread runs
    ours = {key: gflops(*s, lowered_seconds(*operands(*s), TargetSpec(threads)))
            for key, s in shapes.items()}
    time.sleep(SETTLE_SECONDS)
    theirs = {key: gflops(*s, torch_seconds(*operands(*s))) for key, s in shapes.items()}
    return {key: {"rows": m, "in": k, "out": n, "tyllm_gflops": ours[key],
                  "torch_gflops": theirs[key], "fraction_of_torch": ours[key] / theirs[key]}
            for key, (m, k, n) in shapes.items()}
