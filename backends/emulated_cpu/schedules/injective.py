"""`Injective`: a fused chain of elementwise and layout ops as one parallel, vectorised loop
nest."""

from math import prod

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import ScheduleRule, try_inline
from tvm.s_tir.schedule import ScheduleError
from tvm.target import Target
from tyllm.backends.emulated_cpu.schedules.common import static_int, vectorize_innermost


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
        extents = [static_int(sch.get(loop).extent) for loop in loops]
        if not loops or any(e is None for e in extents):
            return
        if len(loops) > 1 and prod(extents) >= self.MIN_PARALLEL:
            outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
            sch.parallel(outer)
        vectorize_innermost(sch, block)
