"""Linears of one input in one launch: the int4 kernels (int4_matmul.py) that read the same
activations (q/k/v after the input norm, gate/up after the post-attention norm) become one
call of a multi-segment kernel, its outputs the same tensors as before. A decode step of
SmolLM2's shape makes 120 int4 launches instead of 210; each launch costs a fork and join of
the thread pool and the input's preparation (docs/PERFORMANCE.md)."""

import tvm
from tvm import relax
from tyllm.backends.emulated_cpu.int4_matmul import (
    INT4_KERNEL_PREFIX,
    MAX_SEGMENTS,
    int4_linears_kernel,
)


def _int4_call(binding) -> relax.Call | None:
    """The binding's call_tir of an int4 linear kernel, if it is one."""
    value = binding.value
    if not (isinstance(value, relax.Call) and value.op.same_as(tvm.ir.Op.get("relax.call_tir"))):
        return None
    callee = value.args[0]
    return value if callee.name_hint.startswith(INT4_KERNEL_PREFIX) else None


def _groups(block) -> list[list]:
    """Bindings of int4 calls on the same input, in binding order, at most MAX_SEGMENTS each;
    only groups of two or more."""
    by_input: dict = {}
    groups = []
    for binding in block.bindings:
        call = _int4_call(binding)
        if call is None:
            continue
        x = call.args[1].fields[0]
        group = by_input.get(x)
        if group is None or len(group) == MAX_SEGMENTS:
            group = by_input[x] = []
            groups.append(group)
        group.append(binding)
    return [g for g in groups if len(g) > 1]


def _segment(call) -> tuple[int, bool]:
    """(outputs, has bias) of one int4 call (without a bias, its operand is a constant that
    is never read: lower.py::_convert_int4_linear)."""
    return int(call.ty.shape[1]), not isinstance(call.args[1].fields[4], tvm.ir.expr.Constant)


def _kernel_for(builder, calls):
    x, qweight, scales = (calls[0].args[1].fields[i] for i in range(3))
    rows, inputs = (int(n) for n in x.ty.shape)
    lanes = int(qweight.ty.shape[-1])
    group = inputs // int(scales.ty.shape[1])
    dtype, scale_dtype = str(x.ty.dtype), str(scales.ty.dtype)
    segments = tuple(_segment(c) for c in calls)
    name = (f"int4_linears_m{rows}_k{inputs}_g{group}_p{lanes}_{dtype}_{scale_dtype}_"
            + "_".join(f"n{n}{'b' if bias else ''}" for n, bias in segments))
    found = [gv for gv in builder.get().get_global_vars() if gv.name_hint == name]
    if found:
        return found[0]
    kernel = int4_linears_kernel(rows, segments, inputs, group, lanes, dtype, scale_dtype)
    return builder.add_func(kernel.with_attr("global_symbol", name), name)


@relax.expr_functor.mutator
class _FuseParallelInt4(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.first: dict = {}  # the first binding's var of a group -> the group
        self.later: set = set()  # the other members' vars (bound with the first)

    def visit_dataflow_block_(self, block):
        for group in _groups(block):
            self.first[group[0].var] = group
            self.later |= {b.var for b in group[1:]}
        return super().visit_dataflow_block_(block)

    def visit_var_binding_(self, binding):
        if binding.var in self.later:
            return
        group = self.first.get(binding.var)
        if group is None:
            super().visit_var_binding_(binding)
            return
        calls = [b.value for b in group]
        args = [calls[0].args[1].fields[0]]
        for call in calls:
            args += [self.visit_expr(a) for a in list(call.args[1].fields)[1:]]
        fused = self.builder_.emit(relax.call_tir(
            _kernel_for(self.builder_, calls), args, [c.ty for c in calls]))
        for i, member in enumerate(group):
            item = self.builder_.normalize(relax.TupleGetItem(fused, i))
            self.builder_.emit_normalized(relax.VarBinding(member.var, item))


@tvm.transform.module_pass(opt_level=0, name="TyllmFuseParallelInt4")
def fuse_parallel_int4(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    mutator = _FuseParallelInt4(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    return _without_uncalled_kernels(mutator.builder_.get())


def _without_uncalled_kernels(mod: tvm.IRModule) -> tvm.IRModule:
    """`mod` without the int4 kernels no call reads any more (each was replaced by a fused
    one), so they are not compiled."""
    called = set()

    def visit(expr):
        if isinstance(expr, relax.Call) and expr.args and isinstance(expr.args[0],
                                                                    tvm.ir.GlobalVar):
            called.add(expr.args[0].name_hint)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    kept = {gv: f for gv, f in mod.functions_items()
            if not gv.name_hint.startswith(INT4_KERNEL_PREFIX) or gv.name_hint in called}
    return tvm.IRModule(kept, attrs=mod.attrs, global_infos=mod.global_infos)
