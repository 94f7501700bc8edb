"""`PackedOperandMatmul`: q @ k^T (an operand with K last) with many rows, one block of the
operand packed per task."""

from math import prod

from tvm import s_tir
from tyllm.backends.emulated_cpu.schedules.common import (
    PANEL_ACC,
    PANEL_LANES,
    PANEL_VECTORS,
    MatmulRule,
    divisor_tile,
    epilogue_at,
    index_vars,
    split_m,
    unroll,
    vectorize_innermost,
)

PACK_ROWS = 16  # from this many rows, an operand not in panels is packed per task


class PackedOperandMatmul(MatmulRule):
    """q @ k^T (and x @ W^T on a weight not in panels) with many rows: a task owns a block of
    PANEL_VECTORS x PANEL_LANES columns of b, copies it transposed into a small buffer
    ([K, block], in cache), then runs PanelMatmul's outer-product kernel over every row tile
    against it, so no output needs a horizontal sum; the copy is paid once for all rows."""

    K_LAST_IN_B = True

    def schedule(self, sch, main, epilogue, extents, batch, m) -> s_tir.Schedule | None:
        rows, n = (prod(extents[i] for i in m) if m else 1), extents[-2]
        if rows < PACK_ROWS or n % PANEL_LANES or not m:
            return None
        vectors = divisor_tile(n // PANEL_LANES, PANEL_VECTORS)
        m_tile = divisor_tile(rows, max(1, PANEL_ACC // vectors))
        loops = sch.get_loops(main.block_rv)
        b_index = _operand_index(sch, main.block_rv, len(extents) - 2)
        mo, mi, _ = split_m(sch, loops, m, extents, m_tile)
        no, nv, lane = sch.split(loops[-2], factors=[None, vectors, PANEL_LANES])
        k = loops[-1]
        sch.reorder(*[loops[i] for i in batch], no, *mo, k, *mi, nv, lane)
        task = sch.fuse(*[loops[i] for i in batch], no)
        sch.parallel(task)
        sch.vectorize(lane)
        unroll(sch, [*mi, nv])
        packed = sch.cache_read(main.block_rv, b_index, "global")
        sch.compute_at(packed, task, preserve_unit_loops=True)
        dims = len(sch.get(packed).writes[0].region)
        sch.transform_layout(packed, ("write", 0),
                             lambda *idx: (*idx[:dims - 2], idx[dims - 1], idx[dims - 2]))
        acc = sch.cache_write(main.block_rv, 0, "global")
        sch.reverse_compute_at(acc, mo[0], preserve_unit_loops=True)
        vectorize_innermost(sch, acc)
        epilogue_at(sch, epilogue, mo[0])
        init = sch.decompose_reduction(main.block_rv, k)
        sch.vectorize(sch.get_loops(init)[-1])
        return sch


def _operand_index(sch: s_tir.Schedule, block, n_axis: int) -> int:
    """Which read of the matmul block is b (the operand the n iterator indexes)."""
    n = sch.get(block).iter_vars[n_axis].var
    return next(i for i, r in enumerate(sch.get(block).reads) if n in index_vars(r))
