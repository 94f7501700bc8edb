"""Hand-written dlight schedule rules for the host CPU: the decode and prefill matmuls, one rule
per file (as TVM's dlight and MLC lay theirs out).

The stock `dlight.cpu.GEMV` vectorises 128 output rows with strided weight loads, which LLVM
compiles very slowly. These rules keep every vector access contiguous instead:

- `PanelMatmul`: x @ W^T with W stored in panels ([N / 16, K, 16], tyllm.models.panels): the
  outer-product micro-kernel of packed GEMMs, no horizontal sums (decode, batches, prefill),
  for float32, half-precision and int4 panels (unpacked inside the kernel).
- `PackedOperandMatmul`: q @ k^T (an operand with K last) with many rows: each task copies its
  block of k transposed into a small buffer, then runs the same outer-product kernel.
- `InnerReductionMatmul`: out[.., m, n] = sum_k a[.., m, k] * b[.., n, k] (x @ W^T, q @ k^T)
  with few rows. The contiguous K loop is split by the vector width and rfactor-ed into
  vector FMAs.
- `OuterReductionMatmul`: out[.., m, n] = sum_k a[.., m, k] * b[.., k, n] (probs @ v).
  K runs outside the innermost output axis n, which is vectorised.

Both keep a tile of accumulators in registers, run the tiles in parallel and accept one
injective epilogue (bias add, silu * mul, residual add) fused after the matmul.

- `DequantizeMatmul`: an int4 linear whose outputs do not fill whole panels: unpacked per task
  into a small buffer, then `InnerReductionMatmul`.
- `Injective`: a fused chain of elementwise / layout ops (int4 weight unpacking, rope, casts)
  becomes one loop nest: every block inlined into the last, rows in parallel when large, the
  innermost axis vectorised.

Row reductions (softmax, whose exp pipeline.py makes vectorisable, and norms) of prefill size
go to TVM's dlight CPU `Reduction` rule (`RowReduction`): rows in parallel, elementwise steps
vectorised.

A PrimFunc they do not recognise is left alone (the rule returns None), so correctness never
depends on them.
"""

from tvm.s_tir.dlight.base import ScheduleRule
from tyllm.backends.emulated_cpu.schedules.common import PANEL_LANES
from tyllm.backends.emulated_cpu.schedules.dequantize import DequantizeMatmul
from tyllm.backends.emulated_cpu.schedules.injective import Injective
from tyllm.backends.emulated_cpu.schedules.inner_reduction import InnerReductionMatmul
from tyllm.backends.emulated_cpu.schedules.outer_reduction import OuterReductionMatmul
from tyllm.backends.emulated_cpu.schedules.packed_operand import PackedOperandMatmul
from tyllm.backends.emulated_cpu.schedules.panel import PanelMatmul
from tyllm.backends.emulated_cpu.schedules.row_reduction import RowReduction

__all__ = ["PANEL_LANES", "DequantizeMatmul", "Injective", "InnerReductionMatmul",
           "OuterReductionMatmul", "PackedOperandMatmul", "PanelMatmul", "RowReduction",
           "cpu_rules"]


def cpu_rules() -> list[ScheduleRule]:
    """The rules for `dlight.ApplyDefaultSchedule`, tried in this order."""
    return [PanelMatmul(), DequantizeMatmul(), PackedOperandMatmul(), InnerReductionMatmul(),
            OuterReductionMatmul(), Injective(), RowReduction()]
