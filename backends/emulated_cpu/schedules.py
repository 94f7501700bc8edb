"""Hand-written dlight schedule rules for the host CPU: the decode and prefill matmuls.

The stock `dlight.cpu.GEMV` vectorises 128 output rows with strided weight loads, which LLVM
compiles very slowly. These rules keep every vector access contiguous instead:

- `PanelMatmul`: x @ W^T with W stored in panels ([N / 16, K, 16], tyllm.models.panels): the
  outer-product micro-kernel of packed GEMMs, no horizontal sums (decode, batches, prefill).
- `PackedOperandMatmul`: q @ k^T (an operand with K last) with many rows: each task copies its
  block of k transposed into a small buffer, then runs the same outer-product kernel.
- `InnerReductionMatmul`: out[.., m, n] = sum_k a[.., m, k] * b[.., n, k] (x @ W^T, q @ k^T)
  with few rows. The contiguous K loop is split by the vector width and rfactor-ed into
  vector FMAs.
- `OuterReductionMatmul`: out[.., m, n] = sum_k a[.., m, k] * b[.., k, n] (probs @ v).
  K runs outside the innermost output axis n, which is vectorised.

Both keep a tile of accumulators in registers, run the tiles in parallel and accept one
injective epilogue (bias add, silu * mul, residual add) fused after the matmul.

- `Injective`: a fused chain of elementwise / layout ops (int4 weight unpacking, rope, casts)
  becomes one loop nest: every block inlined into the last, rows in parallel when large, the
  innermost axis vectorised.

Row reductions (softmax, whose exp pipeline.py makes vectorisable, and norms) of prefill size
go to TVM's dlight CPU `Reduction` rule (`RowReduction`): rows in parallel, elementwise steps
vectorised.

A PrimFunc they do not recognise is left alone (the rule returns None), so correctness never
depends on them.
"""

from math import prod

from tvm import s_tir, tirx
from tvm.s_tir.dlight import cpu as dl_cpu
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule, try_inline, try_inline_contiguous_spatial
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target

VECTOR_WIDTHS = (16, 8, 4)  # fp32 lanes: one 512-bit vector first (LLVM splits it if narrower)
M_TILE = 4  # activation (or query) rows per register tile
N_TILE = 4  # weight (or key) rows per register tile when M > 1; decode streams one row
STREAM_ROWS = 8  # up to this many rows, weight rows stream one at a time (measured below)
PANEL_LANES = 16  # outputs per weight panel vector (tyllm.models.panels)
PANEL_VECTORS = 3  # panels a task multiplies at once
PANEL_ACC = 24  # accumulator vectors per task tile
PACK_ROWS = 16  # from this many rows, an operand not in panels is packed per task
MAX_ACC = 15  # accumulator vectors per tile: TVM stack-allocates only "global" buffers < 1 KiB


def _static(extent) -> int | None:
    return int(extent) if isinstance(extent, tirx.IntImm | int) else None


def _tile(extent: int, cap: int) -> int:
    """The largest divisor of `extent` that is at most `cap` (tiles never need a tail)."""
    return max(d for d in range(1, min(extent, cap) + 1) if extent % d == 0)


def _vector_width(extent: int) -> int | None:
    return next((w for w in VECTOR_WIDTHS if extent % w == 0), None)


def _matmul_with_epilogue(sch: s_tir.Schedule,
                          skip: int = 0) -> tuple[SBlockInfo, SBlockInfo | None] | None:
    """The static-shape S..SR block `out += a * b` and its optional injective epilogue; the
    first `skip` blocks (a weight prologue) are left as they are."""
    infos = try_inline_contiguous_spatial(sch, (normalize_prim_func(sch) or [])[skip:])
    if not infos or len(infos) > 2 or not infos[0].dom_kind().endswith("SR"):
        return None
    main, epilogue = infos[0], (infos[1] if len(infos) == 2 else None)
    if main.dom_kind().count("R") != 1 or (epilogue and not epilogue.is_injective()):
        return None
    if any(_static(d) is None for d in main.dom()):
        return None
    block = sch.get(main.block_rv)
    body = block.body
    if len(block.reads) != 2 or len(block.writes) != 1 or not isinstance(body, tirx.BufferStore):
        return None
    if not isinstance(body.value, tirx.Add) or not isinstance(body.value.b, tirx.Mul):
        return None
    return main, epilogue


def _index_vars(region) -> list:
    """The block variables indexing each dimension of a buffer region (None if not a plain var)."""
    return [r.min if isinstance(r.min, tirx.Var) and _static(r.extent) == 1 else None
            for r in region.region]


def _roles(sch: s_tir.Schedule, main: SBlockInfo, k_last_in_b: bool) -> tuple | None:
    """Splits the leading spatial iters into batch (indexing both operands) and m (indexing a
    only); the last spatial iter n must index b only. K must be the last index of a, and the
    last (`k_last_in_b`) or second-to-last index of b."""
    ivars = [iv.var for iv in sch.get(main.block_rv).iter_vars]
    k, n = ivars[-1], ivars[-2]
    reads = [_index_vars(r) for r in sch.get(main.block_rv).reads]
    with_n = [i for i, r in enumerate(reads) if n in r]
    if len(with_n) != 1:
        return None
    b, a = reads[with_n[0]], reads[1 - with_n[0]]
    if a[-1:] != [k] or b[-2:] != ([n, k] if k_last_in_b else [k, n]):
        return None
    lead = range(len(ivars) - 2)
    batch = [i for i in lead if ivars[i] in a and ivars[i] in b]
    m = [i for i in lead if ivars[i] in a and ivars[i] not in b]
    if batch + m != list(lead):  # batch axes first, then m axes: the usual matmul layout
        return None
    return batch, m


def _split_m(sch: s_tir.Schedule, loops: list, m: list, extents: list,
             cap: int = M_TILE) -> tuple[list, list, int]:
    """Fuses the m loops and splits them into ([outer], [tile of at most `cap` rows], tile)."""
    if not m:
        return [], [], 1
    fused = sch.fuse(*[loops[i] for i in m]) if len(m) > 1 else loops[m[0]]
    tile = _tile(prod(extents[i] for i in m), cap)
    mo, mi = sch.split(fused, factors=[None, tile])
    return [mo], [mi], tile


def _unroll(sch: s_tir.Schedule, loops: list) -> None:
    for loop in loops:
        if (_static(sch.get(loop).extent) or 0) > 1:
            sch.unroll(loop)


def _vectorize_innermost(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    inner = sch.get_loops(block)[-1]
    extent = _static(sch.get(inner).extent) or 0
    width = _vector_width(extent)
    if width and extent > width:
        sch.vectorize(sch.split(inner, factors=[None, width])[1])
    elif 1 < extent <= VECTOR_WIDTHS[0]:
        sch.vectorize(inner)


def _epilogue_at(sch: s_tir.Schedule, epilogue: SBlockInfo | None, loop) -> None:
    """Moves the fused epilogue under the parallel tile loop and vectorises it."""
    if epilogue is not None:
        sch.reverse_compute_at(epilogue.block_rv, loop, preserve_unit_loops=True)
        _vectorize_innermost(sch, epilogue.block_rv)


class _MatmulRule(ScheduleRule):
    """Matches the matmul (with `K_LAST_IN_B` telling which kind) and hands it to `schedule`;
    a schedule primitive that refuses the PrimFunc leaves it unscheduled."""

    K_LAST_IN_B: bool

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        found = self.find(sch)
        roles = found and _roles(sch, found[0], self.K_LAST_IN_B)
        if not roles:
            return None
        extents = [_static(d) for d in found[0].dom()]
        try:
            return self.schedule(sch, *found, extents, *roles)
        except ScheduleError:
            return None

    def find(self, sch: s_tir.Schedule) -> tuple[SBlockInfo, SBlockInfo | None] | None:
        """The matmul block and its optional epilogue, after inlining what can be inlined."""
        return _matmul_with_epilogue(sch)

    def schedule(self, sch, main, epilogue, extents, batch, m) -> s_tir.Schedule | None:
        raise NotImplementedError


class InnerReductionMatmul(_MatmulRule):
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
        width = _vector_width(extents[-1])
        if width is None:
            return None
        loops = sch.get_loops(main.block_rv)
        rows = prod(extents[i] for i in m) if m else 1
        streamed = rows <= STREAM_ROWS  # few rows: stream one weight row at a time, as decode
        mo, mi, m_tile = _split_m(sch, loops, m, extents)
        tiled = not streamed and m_tile > 1
        n_tile = _tile(extents[-2], min(N_TILE, MAX_ACC // m_tile)) if tiled else 1
        # A task takes `group` tiles along n, so that the epilogue gets a vector of outputs.
        lanes = VECTOR_WIDTHS[0] if streamed else max(1, VECTOR_WIDTHS[0] // (m_tile * n_tile))
        group = _tile(extents[-2] // n_tile, lanes)
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
        _unroll(sch, tile)
        sch.reverse_compute_at(main.block_rv, ng, preserve_unit_loops=True)
        self._sum_partials(sch, main.block_rv)
        _epilogue_at(sch, epilogue, task)
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
        _unroll(sch, loops)


class PackedOperandMatmul(_MatmulRule):
    """q @ k^T (and x @ W^T on a weight not in panels) with many rows: a task owns a block of
    PANEL_VECTORS x PANEL_LANES columns of b, copies it transposed into a small buffer
    ([K, block], in cache), then runs PanelMatmul's outer-product kernel over every row tile
    against it, so no output needs a horizontal sum; the copy is paid once for all rows."""

    K_LAST_IN_B = True

    def schedule(self, sch, main, epilogue, extents, batch, m) -> s_tir.Schedule | None:
        rows, n = (prod(extents[i] for i in m) if m else 1), extents[-2]
        if rows < PACK_ROWS or n % PANEL_LANES or not m:
            return None
        vectors = _tile(n // PANEL_LANES, PANEL_VECTORS)
        m_tile = _tile(rows, max(1, PANEL_ACC // vectors))
        loops = sch.get_loops(main.block_rv)
        b_index = _operand_index(sch, main.block_rv, len(extents) - 2)
        mo, mi, _ = _split_m(sch, loops, m, extents, m_tile)
        no, nv, lane = sch.split(loops[-2], factors=[None, vectors, PANEL_LANES])
        k = loops[-1]
        sch.reorder(*[loops[i] for i in batch], no, *mo, k, *mi, nv, lane)
        task = sch.fuse(*[loops[i] for i in batch], no)
        sch.parallel(task)
        sch.vectorize(lane)
        _unroll(sch, [*mi, nv])
        packed = sch.cache_read(main.block_rv, b_index, "global")
        sch.compute_at(packed, task, preserve_unit_loops=True)
        dims = len(sch.get(packed).writes[0].region)
        sch.transform_layout(packed, ("write", 0),
                             lambda *idx: (*idx[:dims - 2], idx[dims - 1], idx[dims - 2]))
        acc = sch.cache_write(main.block_rv, 0, "global")
        sch.reverse_compute_at(acc, mo[0], preserve_unit_loops=True)
        _vectorize_innermost(sch, acc)
        _epilogue_at(sch, epilogue, mo[0])
        init = sch.decompose_reduction(main.block_rv, k)
        sch.vectorize(sch.get_loops(init)[-1])
        return sch


def _operand_index(sch: s_tir.Schedule, block, n_axis: int) -> int:
    """Which read of the matmul block is b (the operand the n iterator indexes)."""
    n = sch.get(block).iter_vars[n_axis].var
    return next(i for i, r in enumerate(sch.get(block).reads) if n in _index_vars(r))


class OuterReductionMatmul(_MatmulRule):
    """probs @ v: K indexes the rows of b, so K runs outside the innermost output axis n, which
    is vectorised (contiguous in b and out); an (M_TILE x vector) tile of sums stays in
    registers; (batch, m tile, n chunk) tiles run in parallel."""

    K_LAST_IN_B = False

    def schedule(self, sch, main, epilogue, extents, batch, m) -> s_tir.Schedule | None:
        width = _vector_width(extents[-2])
        if width is None:
            return None
        loops = sch.get_loops(main.block_rv)
        no, ni = sch.split(loops[-2], factors=[None, width])
        mo, mi, _ = _split_m(sch, loops, m, extents)
        sch.reorder(*[loops[i] for i in batch], *mo, no, loops[-1], *mi, ni)
        outer = sch.fuse(*[loops[i] for i in batch], *mo, no)
        sch.parallel(outer)
        sch.vectorize(ni)
        _unroll(sch, mi)
        acc = sch.cache_write(main.block_rv, 0, "global")  # compacts to the tile, on the stack
        sch.reverse_compute_at(acc, outer, preserve_unit_loops=True)
        _vectorize_innermost(sch, acc)
        _epilogue_at(sch, epilogue, outer)
        init = sch.decompose_reduction(main.block_rv, loops[-1])
        sch.vectorize(sch.get_loops(init)[-1])
        return sch


class Injective(ScheduleRule):
    """All-spatial PrimFuncs: inline every block into the one writing the output, then run the
    outer axes in parallel (when there is enough work to share) and vectorise the innermost."""

    MIN_PARALLEL = 1 << 14  # elements: smaller kernels are not worth a thread-pool launch

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        if not infos or any(not i.is_injective() for i in infos):
            return None
        try:
            remaining = try_inline(sch, infos)
            if len(remaining) != 1:
                return None
            self._parallel_vectorize(sch, remaining[0].block_rv)
        except ScheduleError:
            return None
        return sch

    def _parallel_vectorize(self, sch: s_tir.Schedule, block) -> None:
        loops = sch.get_loops(block)
        extents = [_static(sch.get(loop).extent) for loop in loops]
        if not loops or any(e is None for e in extents):
            return
        if len(loops) > 1 and prod(extents) >= self.MIN_PARALLEL:
            outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
            sch.parallel(outer)
        _vectorize_innermost(sch, block)


class DequantizeMatmul(InnerReductionMatmul):
    """x @ W^T where W is computed in the same PrimFunc from packed weights (int4 unpacking
    fused in by the pipeline): the unpacking chain is inlined into one block that is computed
    per parallel task, for just the weight rows the task reads, into a small buffer that stays
    in cache; the matmul itself is scheduled as InnerReductionMatmul, except that a task runs
    all M rows of its weight rows (prefill unpacks each weight row once, not once per M tile).
    The full-size float weight is never written to memory."""

    SERIAL_M = True

    def find(self, sch: s_tir.Schedule) -> tuple[SBlockInfo, SBlockInfo | None] | None:
        return _matmul_with_epilogue(sch, skip=1) if _weight_prologue(sch) else None

    def schedule(self, sch, main, epilogue, extents, batch, m) -> s_tir.Schedule | None:
        weight = next((b for b in sch.get_producers(main.block_rv) if _reads_packed(sch, b)),
                      None)
        if weight is None or super().schedule(sch, main, epilogue, extents, batch, m) is None:
            return None
        task = sch.get_loops(main.block_rv)[0]
        sch.compute_at(weight, task, preserve_unit_loops=True)
        _split_by_groups(sch, weight)
        _vectorize_innermost(sch, weight)
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
    k = _static(sch.get(k_loop).extent)
    widths = [int(r.source.shape[-1]) for r in sch.get(weight).reads
              if len(r.source.shape) >= 2 and isinstance(r.source.shape[-1], tirx.IntImm)]
    group_counts = [g for g in widths if k and g < k and k % (2 * g) == 0]
    if group_counts:
        count = min(group_counts)
        sch.split(k_loop, factors=[count, 2, k // count // 2])


class PanelMatmul(ScheduleRule):
    """x @ W^T with W stored in panels (tyllm.models.panels: [N / LANES, K, LANES], a vector of
    outputs contiguous at each k): the panel view of the weight is inlined into the matmul,
    which becomes the outer-product micro-kernel of packed GEMMs. A task owns PANEL_VECTORS
    panels and up to PANEL_ACC / PANEL_VECTORS rows (measured, one run each: at 128 rows, 2 x 8,
    2 x 12, 4 x 6 and 3 x 4 all within 10 % of 3 x 8; at 8 rows of SmolLM2's 49152-row LM head
    3 x 8 was the fastest, 68 against 39-57 GFLOP/s); at each k it broadcasts a row's input and
    multiplies it into a vector of each panel, so its (rows x vectors) accumulators stay in
    registers, no horizontal sum is needed, and every weight byte is read once per task in
    address order."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        if not _inline_panel_view(sch):
            return None
        found = _matmul_with_epilogue(sch)
        if not found:
            return None
        extents = [_static(d) for d in found[0].dom()]
        try:
            return self.schedule(sch, *found, extents)
        except ScheduleError:
            return None

    def schedule(self, sch, main, epilogue, extents) -> s_tir.Schedule | None:
        n = extents[-2]
        if n % PANEL_LANES:
            return None
        *m_loops, n_loop, k_loop = sch.get_loops(main.block_rv)
        vectors = _tile(n // PANEL_LANES, PANEL_VECTORS)
        m_tile = _tile(prod(extents[:-2]), max(1, PANEL_ACC // vectors))
        no, nv, lane = sch.split(n_loop, factors=[None, vectors, PANEL_LANES])
        if m_loops:
            fused = sch.fuse(*m_loops) if len(m_loops) > 1 else m_loops[0]
            mo, mi = sch.split(fused, factors=[None, m_tile])
            sch.reorder(no, mo, k_loop, mi, nv, lane)
            task, tile = sch.fuse(no, mo), [mi, nv]
        else:
            sch.reorder(no, k_loop, nv, lane)
            task, tile = no, [nv]
        sch.parallel(task)
        sch.vectorize(lane)
        _unroll(sch, tile)
        acc = sch.cache_write(main.block_rv, 0, "global")
        sch.reverse_compute_at(acc, task, preserve_unit_loops=True)
        _vectorize_innermost(sch, acc)
        _epilogue_at(sch, epilogue, task)
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
    return any(len(r.source.shape) == 3 and _static(r.source.shape[-1]) == PANEL_LANES
               and str(r.source.dtype) != "uint8" for r in sch.get(block).reads)


class RowReduction(dl_cpu.Reduction):
    """dlight's CPU reduction rule (softmax, norms: rows in parallel, elementwise steps
    vectorised), for kernels with at least Injective.MIN_PARALLEL elements: a decode step's
    few rows are not worth a thread-pool launch each (with several dies sharing the cores, such
    launches made decode 2x slower per token), and stay a plain loop nest as before."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or _largest_block(func) < Injective.MIN_PARALLEL:
            return None
        return super().apply(func, target, tunable)


def _largest_block(func: tirx.PrimFunc) -> int:
    """Iterations of the PrimFunc's largest block (0 if none has a static domain)."""
    infos = normalize_prim_func(s_tir.Schedule(func)) or []
    return max((prod(_static(d) or 0 for d in info.dom()) for info in infos), default=0)


def cpu_rules() -> list[ScheduleRule]:
    """The rules for `dlight.ApplyDefaultSchedule`, tried in this order."""
    return [PanelMatmul(), DequantizeMatmul(), PackedOperandMatmul(), InnerReductionMatmul(),
            OuterReductionMatmul(), Injective(), RowReduction()]
