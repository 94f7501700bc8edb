"""`InnerReductionMatmul`: x @ W^T and q @ k^T with K contiguous in both operands."""

from math import prod

from tvm import s_tir, tirx
from tyllm.backends.emulated_cpu.schedules.common import (
    VECTOR_WIDTHS,
    MatmulRule,
    divisor_tile,
    epilogue_at,
    split_m,
    unroll,
    vector_width,
)

N_TILE = 4  # weight (or key) rows per register tile when M > 1; decode streams one row
STREAM_ROWS = 8  # up to this many rows, weight rows stream one at a time (measured below)
MAX_ACC = 15  # accumulator vectors per tile: TVM stack-allocates only "global" buffers < 1 KiB


class InnerReductionMatmul(MatmulRule):
    """x @ W^T and q @ k^T: K is contiguous in both operands. K splits into vector-wide chunks
    that rfactor turns into vector FMAs on partial sums; an (M_TILE x N_TILE) tile of partial
    sums stays in registers (a small stack buffer under unrolled loops), tiles run in
    parallel. Up to STREAM_ROWS rows (decode, batched decode, short prefill) a task streams
    one weight row at a time (purely sequential reads) through tiles of up to M_TILE rows:
    with weights read from memory (a real step), 24 linears 576x1536 on 2 cores took 4.6-5.4
    ms at 2 rows and 9.4-11 ms at 8 rows, against 8.8-9.5 and 12-14.5 ms with 4-row weight
    tiles; at 16 rows the weight tiles are as fast."""

    K_LAST_IN_B = True
    SERIAL_M = False  # True: a parallel task covers all M rows of its weight rows

    def schedule(self, sch, main, epilogue, extents, batch, m) -> s_tir.Schedule | None:
        width = vector_width(extents[-1])
        if width is None:
            return None
        loops = sch.get_loops(main.block_rv)
        rows = prod(extents[i] for i in m) if m else 1
        streamed = rows <= STREAM_ROWS  # few rows: stream one weight row at a time, as decode
        mo, mi, m_tile = split_m(sch, loops, m, extents)
        tiled = not streamed and m_tile > 1
        n_tile = divisor_tile(extents[-2], min(N_TILE, MAX_ACC // m_tile)) if tiled else 1
        # A task takes `group` tiles along n, so that the epilogue gets a vector of outputs.
        lanes = VECTOR_WIDTHS[0] if streamed else max(1, VECTOR_WIDTHS[0] // (m_tile * n_tile))
        group = divisor_tile(extents[-2] // n_tile, lanes)
        n_task, ng, ni = sch.split(loops[-2], factors=[None, group, n_tile])
        ko, ki = sch.split(loops[-1], factors=[None, width])
        sch.reorder(*[loops[i] for i in batch], n_task, *mo, ng, ko, *mi, ni, ki)
        sch.fuse(*[loops[i] for i in batch], n_task, *([] if self.SERIAL_M else mo))
        out_dims = len(sch.get(main.block_rv).writes[0].region)
        rf = sch.rfactor(ki, factor_axis=out_dims)  # partial sums [..., n, width], contiguous
        task, *inner = sch.get_loops(rf)
        ng, ko, *tile, ki = inner[len(mo):] if self.SERIAL_M else inner
        sch.parallel(task)
        sch.vectorize(ki)
        unroll(sch, tile)
        sch.reverse_compute_at(main.block_rv, ng, preserve_unit_loops=True)
        self._sum_partials(sch, main.block_rv)
        epilogue_at(sch, epilogue, task)
        init = sch.decompose_reduction(rf, ko)
        sch.vectorize(sch.get_loops(init)[-1])
        return sch

    @staticmethod
    def _sum_partials(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
        """The write-back block sums each output's `width` partial sums: put that reduction
        innermost and unroll everything, so the partial sums never leave registers."""
        spatial = [iv.iter_type == tirx.IterVar.DataPar for iv in sch.get(block).iter_vars]
        loops = sch.get_loops(block)[-len(spatial):]  # reverse_compute_at made one per iter
        order = sorted(range(len(loops)), key=lambda i: not spatial[i])  # stable: spatial first
        sch.reorder(*[loops[i] for i in order])
        unroll(sch, loops)
