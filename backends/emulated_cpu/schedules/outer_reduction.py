"""`OuterReductionMatmul`: probs @ v, K indexing the rows of the second operand."""

from tvm import s_tir
from tyllm.backends.emulated_cpu.schedules.common import (
    MatmulRule,
    epilogue_at,
    split_m,
    unroll,
    vector_width,
    vectorize_innermost,
)


class OuterReductionMatmul(MatmulRule):
    """probs @ v: K indexes the rows of b, so K runs outside the innermost output axis n, which
    is vectorised (contiguous in b and out); an (M_TILE x vector) tile of sums stays in
    registers; (batch, m tile, n chunk) tiles run in parallel."""

    K_LAST_IN_B = False

    def schedule(self, sch, main, epilogue, extents, batch, m) -> s_tir.Schedule | None:
        width = vector_width(extents[-2])
        if width is None:
            return None
        loops = sch.get_loops(main.block_rv)
        no, ni = sch.split(loops[-2], factors=[None, width])
        mo, mi, _ = split_m(sch, loops, m, extents)
        sch.reorder(*[loops[i] for i in batch], *mo, no, loops[-1], *mi, ni)
        outer = sch.fuse(*[loops[i] for i in batch], *mo, no)
        sch.parallel(outer)
        sch.vectorize(ni)
        unroll(sch, mi)
        acc = sch.cache_write(main.block_rv, 0, "global")  # compacts to the tile, on the stack
        sch.reverse_compute_at(acc, outer, preserve_unit_loops=True)
        vectorize_innermost(sch, acc)
        epilogue_at(sch, epilogue, outer)
        init = sch.decompose_reduction(main.block_rv, loops[-1])
        sch.vectorize(sch.get_loops(init)[-1])
        return sch
