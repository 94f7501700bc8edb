"""`RowReduction`: dlight's CPU reduction rule (softmax, norms), at prefill size only."""

from math import prod

from tvm import s_tir, tirx
from tvm.s_tir.dlight import cpu as dl_cpu
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.target import Target
from tyllm.backends.emulated_cpu.schedules.common import static_int
from tyllm.backends.emulated_cpu.schedules.injective import Injective


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
    return max((prod(static_int(d) or 0 for d in info.dom()) for info in infos), default=0)
