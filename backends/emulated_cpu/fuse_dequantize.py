"""Fusing weight unpacking into the matmul that reads the weight (int4 trees).

After legalization and FuseOps, an int4 linear is two kernels: one unpacks the uint8 weight
into a float [N, K] tensor, the next multiplies by it (with any fused epilogue). This pass puts
each such pair into one PrimFunc (FuseOpsByPattern + FuseTIR); `schedules.DequantizeMatmul`
then computes the float weight per parallel task, in cache, so it never travels to memory.
"""

import tvm
from tvm import relax
from tvm.relax.dpl import GlobalVarPattern, TuplePattern, is_op, wildcard

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


def fuse_dequantize_passes() -> list[tvm.transform.Pass]:
    patterns = [(f"tyllm.dequantize_matmul_{n}", *_unpack_then_matmul(n))
                for n in range(2, MAX_MATMUL_ARGS + 1)]
    return [relax.transform.FuseOpsByPattern(patterns, bind_constants=False),
            relax.transform.FuseTIR()]
