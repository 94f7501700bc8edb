"""`DequantizeMatmul`: x @ W^T on int4 weights unpacked inside the same PrimFunc, per task."""

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.dlight.base import try_inline
from tyllm.backends.emulated_cpu.schedules.common import (
    matmul_with_epilogue,
    static_int,
    vectorize_innermost,
)
from tyllm.backends.emulated_cpu.schedules.inner_reduction import InnerReductionMatmul


class DequantizeMatmul(InnerReductionMatmul):
    """x @ W^T where W is computed in the same PrimFunc from packed weights (int4 unpacking
    fused in by the pipeline): the unpacking chain is inlined into one block that is computed
    per parallel task, for just the weight rows the task reads, into a small buffer that stays
    in cache; the matmul itself is scheduled as InnerReductionMatmul, except that a task runs
    all M rows of its weight rows (prefill unpacks each weight row once, not once per M tile).
    The full-size float weight is never written to memory."""

    SERIAL_M = True

    def find(self, sch: s_tir.Schedule) -> tuple[SBlockInfo, SBlockInfo | None] | None:
        return matmul_with_epilogue(sch, skip=1) if _weight_prologue(sch) else None

    def schedule(self, sch, main, epilogue, extents, batch, m) -> s_tir.Schedule | None:
        weight = next((b for b in sch.get_producers(main.block_rv) if _reads_packed(sch, b)),
                      None)
        if weight is None or super().schedule(sch, main, epilogue, extents, batch, m) is None:
            return None
        task = sch.get_loops(main.block_rv)[0]
        sch.compute_at(weight, task, preserve_unit_loops=True)
        _split_by_groups(sch, weight)
        vectorize_innermost(sch, weight)
        return sch


def _weight_prologue(sch: s_tir.Schedule):
    """Inlines the injective blocks before the matmul into the last of them (the weight);
    returns that block, or None when the PrimFunc does not start with such a chain reading
    packed (uint8) weights."""
    infos = normalize_prim_func(sch) or []
    first_reduction = next((i for i, b in enumerate(infos) if not b.is_injective()), 0)
    if first_reduction == 0:  # no reduction, or nothing before it
        return None
    chain = infos[:first_reduction]
    if try_inline(sch, chain[:-1]):
        return None
    weight = chain[-1].block_rv
    return weight if _reads_packed(sch, weight) else None


def _reads_packed(sch: s_tir.Schedule, block) -> bool:
    """Whether `block` reads packed (uint8) weights."""
    return any(str(r.source.dtype) == "uint8" for r in sch.get(block).reads)


def _split_by_groups(sch: s_tir.Schedule, weight) -> None:
    """Splits the weight's K loop into (group, half, element) when it reads per-group tensors
    (scales, zeros): group and half become loop indices, so the unpacking of one half-group is
    a plain vector load, mask or shift, convert, subtract and multiply."""
    k_loop = sch.get_loops(weight)[-1]
    k = static_int(sch.get(k_loop).extent)
    widths = [int(r.source.shape[-1]) for r in sch.get(weight).reads
              if len(r.source.shape) >= 2 and isinstance(r.source.shape[-1], tirx.IntImm)]
    group_counts = [g for g in widths if k and g < k and k % (2 * g) == 0]
    if group_counts:
        count = min(group_counts)
        sch.split(k_loop, factors=[count, 2, k // count // 2])
