"""Lowering a captured step (torch ExportedProgram) to a TVM shared library for the host CPU."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tvm
from tvm import relax
from tvm.relax.frontend import detach_params
from tvm.relax.frontend.torch import from_exported_program
from tyllm.backends.emulated_cpu.attention import attention_kernel
from tyllm.backends.emulated_cpu.few_rows_attention import FEW_ROWS, few_rows_attention_kernel
from tyllm.backends.emulated_cpu.int4_matmul import (
    INT4_KERNEL_PREFIX,
    MAX_ROWS,
    int4_linear_kernel,
)
from tyllm.backends.emulated_cpu.pipeline import build_pipeline
from tyllm.backends.emulated_cpu.schedules import PANEL_LANES

from tyllm.capture.export import HISTORY_MASK
from tyllm.capture.ops import ALL_REDUCE_PACKED_FUNC, int4_linear_reference


@dataclass(frozen=True)
class TargetSpec:
    """The LLVM target of the host CPU; `num_cores` bounds TVM's parallel loops. Linear weights
    come in panels of `weight_panels` outputs, what the matmul kernel reads (schedules/)."""

    num_cores: int = 1
    weight_panels: int = PANEL_LANES

    def as_json(self) -> dict:
        """What a compiled program depends on: the CPU it is tuned for, its core count and the
        weight layout its kernels read."""
        return {"backend": "emulated_cpu", "kind": "llvm",
                "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num_cores": self.num_cores,
                "weight_panels": self.weight_panels}

    def lower(self, program: torch.export.ExportedProgram, library: Path) -> list[str]:
        return lower_to_library(program, library, self)

    def lower_windows(self, program: torch.export.ExportedProgram,
                      libraries: dict[int, Path]) -> list[str]:
        return lower_windows(program, libraries, self)

    def tvm_target(self) -> tvm.target.Target:
        cpu = tvm.target.codegen.llvm_get_system_cpu()
        return tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": self.num_cores})


def _convert_all_reduce(node, importer):
    x = importer.env[node.args[0]]
    call = relax.call_dps_packed(ALL_REDUCE_PACKED_FUNC, [x], out_ty=x.ty)
    return importer.block_builder.emit(call)


def _kernel_named(bb, name: str, make):
    """The module's hand-written kernel `name`, added (from `make()`) at its first use: one
    PrimFunc per shape, whatever the number of calls."""
    found = [gv for gv in bb.get().get_global_vars() if gv.name_hint == name]
    return found[0] if found else bb.add_func(make().with_attr("global_symbol", name), name)


def _attention_name(shape_name: str, kv_of: tuple[int, ...], kv_heads: int) -> str:
    """An attention kernel's name: its shape, and its head mapping unless contiguous and even."""
    heads = len(kv_of)
    if kv_of == tuple(h // (heads // kv_heads) for h in range(heads)):
        return shape_name
    return shape_name + "_" + "_".join(map(str, kv_of))


def _convert_attention(node, importer):
    """`tyllm::attention` -> a call of the host kernel (attention.py; few_rows_attention.py for
    up to FEW_ROWS rows), one per shape and head mapping in the module, the layer passed as a
    scalar."""
    q, k, v, k_cache, v_cache, mask = (importer.env[a] for a in node.args[:6])
    layer, kv_of = node.args[6], tuple(node.args[7])
    heads, rows, head_dim = (int(n) for n in q.ty.shape)
    layers, kv_heads, cache, _ = (int(n) for n in k_cache.ty.shape)
    dtype = _dtype(q)
    name = _attention_name(f"attention_h{heads}_kv{kv_heads}_m{rows}_d{head_dim}_{dtype}",
                           kv_of, kv_heads)
    bb = importer.block_builder
    make = few_rows_attention_kernel if rows <= FEW_ROWS else attention_kernel
    kernel = _kernel_named(bb, name, lambda: make(
        kv_of, kv_heads, rows, head_dim, layers, cache, dtype))
    # Measured: without a global symbol, or named "tyllm_attention_*", this kernel made TVM's
    # LLVM codegen emit every kernel of the module without its outlined compute function, and
    # the matmuls ran 2x slower; named "attention_*" it does not (the cause is not known).
    args = [q, k, v, k_cache, v_cache, mask, tvm.tirx.IntImm("int64", layer)]
    return bb.emit(relax.call_tir(kernel, args, relax.TensorType((rows, heads * head_dim), dtype)))


def _convert_attention_rows(node, importer):
    """`tyllm::attention_rows` (B sequences of one row) -> one call of the few-rows kernel
    written for B sequences (few_rows_attention.py), their caches its operands."""
    q, k, v = (importer.env[a] for a in node.args[:3])
    k_caches, v_caches = ([importer.env[a] for a in arg] for arg in node.args[3:5])
    mask = importer.env[node.args[5]]
    layer, kv_of = node.args[6], tuple(node.args[7])
    heads, rows, head_dim = (int(n) for n in q.ty.shape)
    layers, kv_heads, cache, _ = (int(n) for n in k_caches[0].ty.shape)
    dtype = _dtype(q)
    name = _attention_name(f"attention_rows_b{rows}_h{heads}_kv{kv_heads}_d{head_dim}_{dtype}",
                           kv_of, kv_heads)
    bb = importer.block_builder
    kernel = _kernel_named(bb, name, lambda: few_rows_attention_kernel(
        kv_of, kv_heads, 1, head_dim, layers, cache, dtype, sequences=rows))
    caches = [c for pair in zip(k_caches, v_caches, strict=True) for c in pair]
    args = [q, k, v, *caches, mask, tvm.tirx.IntImm("int64", layer)]
    return bb.emit(relax.call_tir(kernel, args, relax.TensorType((rows, heads * head_dim), dtype)))


def _convert_int4_linear(node, importer):
    """`tyllm::int4_linear` of at most MAX_ROWS rows -> a call of the host kernel
    (int4_matmul.py), one per shape in the module."""
    x, qweight, scales, qzeros = (importer.env[a] for a in node.args[:4])
    bias = importer.env[node.args[4]] if node.args[4] is not None else None
    group = int(node.args[5])
    rows, inputs = (int(n) for n in x.ty.shape)
    blocks, _, lanes = (int(n) for n in qweight.ty.shape)
    outputs, dtype, scale_dtype = blocks * lanes, _dtype(x), _dtype(scales)
    name = (f"{INT4_KERNEL_PREFIX}{rows}_n{outputs}_k{inputs}_g{group}_p{lanes}_{dtype}_"
            f"{scale_dtype}{'_bias' if bias is not None else ''}")
    bb = importer.block_builder
    kernel = _kernel_named(bb, name, lambda: int4_linear_kernel(
        rows, outputs, inputs, group, lanes, dtype, scale_dtype, bias is not None))
    if bias is None:  # the kernel's bias operand, never read
        bias = relax.const(np.zeros(outputs, "float32"), "float32")
    out_ty = relax.TensorType((rows, outputs), dtype)
    return bb.emit(relax.call_tir(kernel, [x, qweight, scales, qzeros, bias], out_ty))


def with_generic_int4(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """`program` with its int4 linears of more than MAX_ROWS rows (prefill) written out in
    standard ops, which the scheduled matmul (schedules/panel.py) unpacks inside its kernel."""
    op = torch.ops.tyllm.int4_linear.default
    rows = [n.args[0].meta["val"].shape[0] for n in program.graph.nodes if n.target == op]
    if not rows or max(rows) <= MAX_ROWS:
        return program
    return program.run_decompositions({op: int4_linear_reference})


# The stock importer makes every mm/bmm/linear output float32, so a float16 graph would silently
# compute in float32 with a weight copy per call: keep the operands' dtype instead.
def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _convert_matmul(node, importer):
    a, b = importer.env[node.args[0]], importer.env[node.args[1]]
    return importer.block_builder.emit(relax.op.matmul(a, b, out_dtype=_dtype(a)))


def _convert_addmm(node, importer):
    if node.kwargs.get("alpha", 1) != 1 or node.kwargs.get("beta", 1) != 1:
        raise NotImplementedError("addmm with alpha/beta is not lowered by tyllm")
    bias, a, b = (importer.env[arg] for arg in node.args[:3])
    product = importer.block_builder.emit(relax.op.matmul(a, b, out_dtype=_dtype(a)))
    return importer.block_builder.emit(relax.op.add(bias, product))


def _convert_linear(node, importer):
    x, weight, *rest = (importer.env.get(a, a) if a is not None else None for a in node.args)
    bias = rest[0] if rest else None
    return importer.block_builder.emit(relax.op.linear(x, weight, bias, _dtype(x)))


def _convert_right_shift(node, importer):  # the stock importer lacks `x >> n` (int4 unpacking)
    x = importer.env[node.args[0]]
    shift = relax.const(node.args[1], _dtype(x))
    return importer.block_builder.emit(relax.op.right_shift(x, shift))


def _convert_unsafe_view(node, importer):  # a reshape of a copy (decomposed references)
    x = importer.env[node.args[0]]
    return importer.block_builder.emit(relax.op.reshape(x, node.args[1]))


CUSTOM_CONVERT_MAP = {
    "__rshift__.Scalar": _convert_right_shift,
    "all_reduce.default": _convert_all_reduce,
    "attention.default": _convert_attention,
    "attention_rows.default": _convert_attention_rows,
    "int4_linear.default": _convert_int4_linear,
    "mm.default": _convert_matmul,
    "bmm.default": _convert_matmul,
    "matmul.default": _convert_matmul,
    "addmm.default": _convert_addmm,
    "linear.default": _convert_linear,
    "_unsafe_view.default": _convert_unsafe_view,
}


def import_program(program: torch.export.ExportedProgram) -> tuple[tvm.IRModule, list[str]]:
    """Relax module whose `main` takes the user inputs, then the parameters in the returned
    order (module parameter names, as in `named_parameters()`)."""
    mod = from_exported_program(with_generic_int4(program), keep_params_as_input=True,
                                run_ep_decomposition=False, custom_convert_map=CUSTOM_CONVERT_MAP)
    mod, _ = detach_params(mod)  # the values are saved by the caller, by name
    by_arg = {spec.arg.name: spec.target for spec in program.graph_signature.input_specs}
    num_input = int(mod["main"].attrs["num_input"])
    names = [by_arg[v.name] for v in mod["main"].params[num_input:]]
    return mod, names


def compile_module(mod: tvm.IRModule, out: Path, target: TargetSpec) -> None:
    tvm_target = target.tvm_target()
    executable = tvm.compile(mod, target=tvm_target, relax_pipeline=build_pipeline(tvm_target))
    executable.export_library(str(out))


def lower_to_library(program: torch.export.ExportedProgram, out: Path,
                     target: TargetSpec) -> list[str]:
    """Compiles `program` into the shared library `out`; returns the parameter binding order."""
    mod, param_names = import_program(program)
    compile_module(mod, out, target)
    return param_names


def bind_size(mod: tvm.IRModule, size: int) -> tvm.IRModule:
    """`mod` with its one symbolic size (the KV window of a step) fixed to `size`; a program
    traced static (a one-window cache) is returned as it is."""
    sizes = relax.analysis.defined_symbolic_vars(mod["main"])
    if not sizes:
        traced = [p.ty.shape[-1] for p in mod["main"].params if str(p.name) == HISTORY_MASK]
        if traced and int(traced[0]) != size:
            raise RuntimeError(f"a program traced for a window of {int(traced[0])} cannot be "
                               f"bound to {size}")
        return mod
    if len(sizes) != 1:
        raise RuntimeError(f"expected one symbolic size (the KV window), found {list(sizes)}")
    return relax.transform.BindSymbolicVars({sizes[0]: size})(mod)


def lower_windows(program: torch.export.ExportedProgram, libraries: dict[int, Path],
                  target: TargetSpec) -> list[str]:
    """Compiles a program whose one symbolic size is its KV window into one static library per
    window (`libraries`: window -> path); returns the parameter binding order."""
    mod, param_names = import_program(program)
    for window, out in libraries.items():
        compile_module(bind_size(mod, window), out, target)
    return param_names
