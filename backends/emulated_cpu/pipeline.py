"""The Relax pass pipeline for the emulated CPU backend, as readable stages (TVM cpu_generic style).

Stage 1 dispatches library ops, stage 2 fuses transposes into matmuls, legalizes and fuses
(int4 weight unpacking and panelled weight views into the matmul that reads them:
fuse_weights.py), stage 3 schedules the
fused kernels for the CPU with tyllm's own rules (schedules.py), stage 4 lowers dataflow and
stage 5 plans memory and finalizes for the VM.
"""

import tvm
from tvm import relax, topi
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import dlight as dl
from tyllm.backends.emulated_cpu.fuse_weights import fuse_weight_passes
from tyllm.backends.emulated_cpu.parallel_linears import fuse_parallel_int4
from tyllm.backends.emulated_cpu.schedules import cpu_rules


def _fast_sigmoid(x):
    return topi.divide(tvm.tirx.const(1, x.dtype), topi.add(tvm.tirx.const(1, x.dtype),
                                                            topi.fast_exp(topi.negative(x))))


@relax.expr_functor.mutator
class _FastExp(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op):
            return call
        if call.op.name == "relax.nn.softmax":
            return self.builder_.call_te(topi.nn.fast_softmax, call.args[0], call.attrs.axis)
        if call.op.name == "relax.sigmoid" and str(call.args[0].ty.dtype) == "float32":
            return self.builder_.call_te(_fast_sigmoid, call.args[0], primfunc_name_hint="sigmoid")
        return call


@tvm.transform.module_pass(opt_level=0, name="TyllmFastExp")
def fast_exp(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Softmax and sigmoid (SiLU's) with TVM's vectorisable exp (a polynomial: at most 1.1e-6
    relative error on [-20, 0], 4.1e-6 on [-87, 0], against 2e-7 for numpy's fp32 exp):
    otherwise every exp is a libm call; softmax was a third of a 128-row prefill step, and the
    sigmoid fused after the gate projection a third of that matmul's time. Nothing else
    changes (relax.transform.FastMathTransform would approximate every exp, erf, tanh)."""
    mutator = _FastExp(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()


HALF_TYPES = ("float16", "bfloat16")


@relax.expr_functor.mutator
class _Fp32Accumulation(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.matmul"):
            return call
        dtype = str(call.ty.dtype)
        if dtype not in HALF_TYPES:
            return call
        wide = self.builder_.normalize(relax.op.matmul(*call.args, out_dtype="float32"))
        return relax.op.astype(wide, dtype)


@tvm.transform.module_pass(opt_level=0, name="TyllmFp32Accumulation")
def fp32_accumulation(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Half-precision matmuls accumulate in float32 and round once, as torch's CPU kernels do:
    a sum of thousands of products rounded to 11 bits at every step drifts (a 27648-wide MLP
    of a 32B model changed greedy tokens), and the host has no half-precision FMA anyway. Runs
    before FuseTransposeMatmul, which keeps the wider output type."""
    mutator = _Fp32Accumulation(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return mutator.builder_.get()


def legalize_passes(target: tvm.target.Target) -> list:
    return [fuse_parallel_int4, fp32_accumulation, relax.transform.FuseTransposeMatmul(), fast_exp,
            *cpu_generic.legalize_passes(target), *fuse_weight_passes()]


def schedule_passes(target: tvm.target.Target) -> list:
    return [dl.ApplyDefaultSchedule(*cpu_rules())]


def build_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="TyllmEmulatedCpuPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                cpu_generic.library_dispatch_passes(target)
                + legalize_passes(target)
                + schedule_passes(target)
                + cpu_generic.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline
