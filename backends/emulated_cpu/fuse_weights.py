"""Fusing the view of a stored weight into the matmul that reads it.

After legalization and FuseOps, a linear whose weight is stored in another layout is two
kernels: one makes the float [N, K] weight, the next multiplies by it (with any fused
epilogue). These passes put each such pair into one PrimFunc (FuseOpsByPattern + FuseTIR), so
the [N, K] weight is never written to memory:
- int4 trees: the unpacking of uint8 weights; `schedules.PanelMatmul` unpacks int4 panels
  inside its micro-kernel, `schedules.DequantizeMatmul` (weights not in panels) computes the
  float weight per parallel task, in cache;
- weights in panels ([N / P, K, P], tyllm.models.panels): the view is a relabelling that
  `schedules.PanelMatmul` inlines into the matmul's reads.
"""

import tvm
from tvm import relax
from tvm.relax.dpl import GlobalVarPattern, TuplePattern, is_op, wildcard
from tyllm.backends.emulated_cpu.schedules import PANEL_LANES

MAX_MATMUL_ARGS = 4  # x, weight, and up to two epilogue operands (bias, residual)


def _unpack_then_matmul(num_args: int):
    """call_tir(unpack, (qweight uint8, scales, zeros)) feeding call_tir(matmul, (x, weight,
    ...)); a consumer that is not a matmul is still correct, only not scheduled as one."""
    packed = TuplePattern([wildcard() for _ in range(3)])  # distinct: a shared one must match
    unpack = is_op("relax.call_tir")(GlobalVarPattern(), packed, add_constraint=False)
    operands = [wildcard(), unpack] + [wildcard() for _ in range(num_args - 2)]
    matmul = is_op("relax.call_tir")(GlobalVarPattern(), TuplePattern(operands),
                                     add_constraint=False)
    return matmul, {"unpack": unpack}, _reads_packed_weights


def _reads_packed_weights(ctx) -> bool:
    """The unpacking kernel takes a uint8 tensor (tyllm's int4 layout, any argument order)."""
    return any(str(a.ty.dtype) == "uint8" for a in ctx.annotated_expr["unpack"].args[1])


def _panels_then_matmul(num_args: int):
    """call_tir(view, (panelled weight,)) feeding call_tir(matmul, (x, weight, ...))."""
    view = is_op("relax.call_tir")(GlobalVarPattern(), TuplePattern([wildcard()]),
                                   add_constraint=False)
    operands = [wildcard(), view] + [wildcard() for _ in range(num_args - 2)]
    matmul = is_op("relax.call_tir")(GlobalVarPattern(), TuplePattern(operands),
                                     add_constraint=False)
    return matmul, {"view": view}, _reads_panels


def _reads_panels(ctx) -> bool:
    (weight,) = ctx.annotated_expr["view"].args[1]
    shape = weight.ty.shape
    return (str(weight.ty.dtype) != "uint8" and len(shape) == 3
            and int(shape[-1]) == PANEL_LANES)


def fuse_weight_passes() -> list[tvm.transform.Pass]:
    patterns = [(f"tyllm.dequantize_matmul_{n}", *_unpack_then_matmul(n))
                for n in range(2, MAX_MATMUL_ARGS + 1)]
    patterns += [(f"tyllm.panel_matmul_{n}", *_panels_then_matmul(n))
                 for n in range(2, MAX_MATMUL_ARGS + 1)]
    return [relax.transform.FuseOpsByPattern(patterns, bind_constants=False),
            relax.transform.FuseTIR()]
