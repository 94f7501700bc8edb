"""`PanelMatmul`: x @ W^T with W stored in panels, the outer-product kernel of packed GEMMs."""

from math import prod

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule, try_inline
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target
from tyllm.backends.emulated_cpu.schedules.common import (
    PANEL_ACC,
    PANEL_LANES,
    PANEL_ONE_ROW_VECTORS,
    PANEL_VECTORS,
    divisor_tile,
    epilogue_at,
    matmul_with_epilogue,
    static_int,
    unroll,
    vectorize_innermost,
)

INT4_OPERANDS = 3  # an int4 weight is computed from its bytes, scales and zero points


class PanelMatmul(ScheduleRule):
    """x @ W^T with W stored in panels (tyllm.models.panels: [N / LANES, K, LANES], a vector of
    outputs contiguous at each k): the panel view of the weight is inlined into the matmul,
    which becomes the outer-product micro-kernel of packed GEMMs. A task owns PANEL_VECTORS
    panels and up to PANEL_ACC / PANEL_VECTORS rows (measured, one run each: at 128 rows, 2 x 8,
    2 x 12, 4 x 6 and 3 x 4 all within 10 % of 3 x 8; at 8 rows of SmolLM2's 49152-row LM head
    3 x 8 was the fastest, 68 against 39-57 GFLOP/s); at each k it broadcasts a row's input and
    multiplies it into a vector of each panel, so its (rows x vectors) accumulators stay in
    registers, no horizontal sum is needed, and every weight byte is read once per task in
    address order. One row (decode) takes PANEL_ONE_ROW_VECTORS panels a task.

    The same kernel serves every stored format: float32 and half-precision panels are loaded
    (and widened) as they are; int4 panels (tyllm.models.decoder.Int4Linear: bytes, scales and
    zero points each in panels) of more rows than the int4 kernel takes (int4_matmul.py, decode)
    are unpacked inside it, a group at a time: the group's scales and zero points stay in
    registers, and both nibbles of a byte come from one load."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        if not _inline_panel_view(sch):
            return None
        found = matmul_with_epilogue(sch, operands=INT4_OPERANDS)
        if not found:
            return None
        extents = [static_int(d) for d in found[0].dom()]
        try:
            return self.schedule(sch, *found, extents)
        except ScheduleError:
            return None

    def schedule(self, sch, main, epilogue, extents) -> s_tir.Schedule | None:
        n = extents[-2]
        if n % PANEL_LANES:
            return None
        *m_loops, n_loop, k_loop = sch.get_loops(main.block_rv)
        rows = prod(extents[:-2])
        cap = PANEL_VECTORS if rows > 1 else PANEL_ONE_ROW_VECTORS
        vectors = divisor_tile(n // PANEL_LANES, cap)
        m_tile = divisor_tile(prod(extents[:-2]), max(1, PANEL_ACC // vectors))
        no, nv, lane = sch.split(n_loop, factors=[None, vectors, PANEL_LANES])
        k_loop, *k_inner = split_k_by_groups(sch, main.block_rv, k_loop, extents[-1])
        if m_loops:
            fused = sch.fuse(*m_loops) if len(m_loops) > 1 else m_loops[0]
            mo, mi = sch.split(fused, factors=[None, m_tile])
            sch.reorder(no, mo, k_loop, *k_inner, mi, nv, lane)
            task, tile = sch.fuse(no, mo), [mi, nv]
        else:
            sch.reorder(no, k_loop, *k_inner, nv, lane)
            task, tile = no, [nv]
        sch.parallel(task)
        sch.vectorize(lane)
        unroll(sch, tile)
        acc = sch.cache_write(main.block_rv, 0, "global")
        sch.reverse_compute_at(acc, task, preserve_unit_loops=True)
        vectorize_innermost(sch, acc)
        epilogue_at(sch, epilogue, task)
        init = sch.decompose_reduction(main.block_rv, k_loop)
        sch.vectorize(sch.get_loops(init)[-1])
        return sch


def _inline_panel_view(sch: s_tir.Schedule) -> bool:
    """Inlines the injective blocks that read a panelled weight ([N / LANES, K, LANES]) into
    the matmul after them; False when the PrimFunc does not start with such a view."""
    infos = normalize_prim_func(sch) or []
    first_reduction = next((i for i, b in enumerate(infos) if not b.is_injective()), 0)
    if first_reduction == 0:
        return False
    chain = infos[:first_reduction]
    if not any(_reads_panels(sch, b.block_rv) for b in chain):
        return False
    return not try_inline(sch, chain)


def _reads_panels(sch: s_tir.Schedule, block) -> bool:
    return any(len(r.source.shape) == 3 and static_int(r.source.shape[-1]) == PANEL_LANES
               for r in sch.get(block).reads)


def split_k_by_groups(sch: s_tir.Schedule, block, k_loop, k: int) -> list:
    """[k] for a float weight; for int4 panels ([N / P, K / G, P] scales and zero points,
    [N / P, K / 2, P] bytes holding inputs j and j + G / 2 of a group), the loops (group,
    element, half): the group's scales and zero points are loop invariants of the inner two,
    and both nibbles of a byte are taken from one widened load (half unrolled)."""
    widths = [static_int(r.source.shape[1]) for r in sch.get(block).reads
              if len(r.source.shape) == 3 and static_int(r.source.shape[-1]) == PANEL_LANES]
    groups = [g for g in widths if g and g < k // 2 and k % (2 * g) == 0]
    if not groups:
        return [k_loop]
    count = min(groups)
    group, half, element = sch.split(k_loop, factors=[count, 2, k // count // 2])
    sch.reorder(element, half)
    sch.unroll(half)
    return [group, element, half]
