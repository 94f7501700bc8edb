"""What the schedule rules share: the register-tile sizes, matching a matmul block (with its
epilogue) and the roles of its loops, and the loop transformations every rule uses."""

from math import prod

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule, try_inline_contiguous_spatial
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target

VECTOR_WIDTHS = (16, 8, 4)  # fp32 lanes: one 512-bit vector first (LLVM splits it if narrower)
M_TILE = 4  # activation (or query) rows per register tile
PANEL_LANES = 16  # outputs per weight panel vector (tyllm.models.panels)
PANEL_VECTORS = 3  # panels a task multiplies at once
# with one row (decode), panels a task multiplies at once. One: a thread's tasks are adjacent, so
# it reads one contiguous stream; panels read side by side were as many short streams the
# prefetcher kept losing. Its one FMA chain (4 cycles a vector) still outruns a core's share of
# the bandwidth. SmolLM2's decode graph against 8 side by side, alternating in one process:
# float16 8.3-8.5 -> 7.95 ms, float32 12.4 -> 11.1 ms (fastest runs).
PANEL_ONE_ROW_VECTORS = 1
PANEL_ACC = 24  # accumulator vectors per task tile


def static_int(extent) -> int | None:
    return int(extent) if isinstance(extent, tirx.IntImm | int) else None


def divisor_tile(extent: int, cap: int) -> int:
    """The largest divisor of `extent` that is at most `cap` (tiles never need a tail)."""
    return max(d for d in range(1, min(extent, cap) + 1) if extent % d == 0)


def vector_width(extent: int) -> int | None:
    return next((w for w in VECTOR_WIDTHS if extent % w == 0), None)


def matmul_with_epilogue(sch: s_tir.Schedule, skip: int = 0,
                         operands: int = 2) -> tuple[SBlockInfo, SBlockInfo | None] | None:
    """The static-shape S..SR block `out += a * b` and its optional injective epilogue; the
    first `skip` blocks (a weight prologue) are left as they are. `operands`: how many
    buffers b may be computed from (an int4 weight inlined: bytes, scales, zero
    points)."""
    infos = try_inline_contiguous_spatial(sch, (normalize_prim_func(sch) or [])[skip:])
    if not infos or len(infos) > 2 or not infos[0].dom_kind().endswith("SR"):
        return None
    main, epilogue = infos[0], (infos[1] if len(infos) == 2 else None)
    if main.dom_kind().count("R") != 1 or (epilogue and not epilogue.is_injective()):
        return None
    if any(static_int(d) is None for d in main.dom()):
        return None
    block = sch.get(main.block_rv)
    body = block.body
    if not 2 <= len(block.reads) <= operands + 1 or len(block.writes) != 1:
        return None
    if not isinstance(body, tirx.BufferStore):
        return None
    if not isinstance(body.value, tirx.Add) or not isinstance(body.value.b, tirx.Mul):
        return None
    return main, epilogue


def index_vars(region) -> list:
    """The block variables indexing each dimension of a buffer region (None if not a plain var)."""
    return [r.min if isinstance(r.min, tirx.Var) and static_int(r.extent) == 1 else None
            for r in region.region]


def matmul_roles(sch: s_tir.Schedule, main: SBlockInfo, k_last_in_b: bool) -> tuple | None:
    """Splits the leading spatial iters into batch (indexing both operands) and m (indexing a
    only); the last spatial iter n must index b only. K must be the last index of a, and the
    last (`k_last_in_b`) or second-to-last index of b."""
    ivars = [iv.var for iv in sch.get(main.block_rv).iter_vars]
    k, n = ivars[-1], ivars[-2]
    reads = [index_vars(r) for r in sch.get(main.block_rv).reads]
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


def split_m(sch: s_tir.Schedule, loops: list, m: list, extents: list,
            cap: int = M_TILE) -> tuple[list, list, int]:
    """Fuses the m loops and splits them into ([outer], [tile of at most `cap` rows], tile)."""
    if not m:
        return [], [], 1
    fused = sch.fuse(*[loops[i] for i in m]) if len(m) > 1 else loops[m[0]]
    tile = divisor_tile(prod(extents[i] for i in m), cap)
    mo, mi = sch.split(fused, factors=[None, tile])
    return [mo], [mi], tile


def unroll(sch: s_tir.Schedule, loops: list) -> None:
    for loop in loops:
        if (static_int(sch.get(loop).extent) or 0) > 1:
            sch.unroll(loop)


def vectorize_innermost(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> None:
    inner = sch.get_loops(block)[-1]
    extent = static_int(sch.get(inner).extent) or 0
    width = vector_width(extent)
    if width and extent > width:
        sch.vectorize(sch.split(inner, factors=[None, width])[1])
    elif 1 < extent <= VECTOR_WIDTHS[0]:
        sch.vectorize(inner)


def epilogue_at(sch: s_tir.Schedule, epilogue: SBlockInfo | None, loop) -> None:
    """Moves the fused epilogue under the parallel tile loop and vectorises it."""
    if epilogue is not None:
        sch.reverse_compute_at(epilogue.block_rv, loop, preserve_unit_loops=True)
        vectorize_innermost(sch, epilogue.block_rv)


class MatmulRule(ScheduleRule):
    """Matches the matmul (with `K_LAST_IN_B` telling which kind) and hands it to `schedule`;
    a schedule primitive that refuses the PrimFunc leaves it unscheduled."""

    K_LAST_IN_B: bool

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        found = self.find(sch)
        roles = found and matmul_roles(sch, found[0], self.K_LAST_IN_B)
        if not roles:
            return None
        extents = [static_int(d) for d in found[0].dom()]
        try:
            return self.schedule(sch, *found, extents, *roles)
        except ScheduleError:
            return None

    def find(self, sch: s_tir.Schedule) -> tuple[SBlockInfo, SBlockInfo | None] | None:
        """The matmul block and its optional epilogue, after inlining what can be inlined."""
        return matmul_with_epilogue(sch)

    def schedule(self, sch, main, epilogue, extents, batch, m) -> s_tir.Schedule | None:
        raise NotImplementedError
