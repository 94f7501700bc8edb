"""ONNX twin of a captured step, for inspection and the onnxruntime cross-check (`tyllm verify`).

`tyllm::attention` is written out in standard ops (its reference). `tyllm::all_reduce` becomes a
`tyllm.AllReduce` node, defined in the model as a local function
with the one-die (identity) meaning, so onnxruntime runs a die graph on its own. Weights are not
copied: initializers point into the die's `common_die{d}.params` (safetensors) by byte offset.
"""

import json
import struct
from pathlib import Path

import onnx
import onnx_ir as ir
import torch
from onnx import helper
from onnxscript import opset18 as op

from tyllm.artifacts.params import ALIASES
from tyllm.capture.export import OUTPUT_NAMES
from tyllm.capture.ops import (
    attention_reference,
    attention_rows_reference,
    int4_linear_reference,
)

DOMAIN = "tyllm"
ALL_REDUCE_TARGET = "torch.ops.tyllm.all_reduce"


def _all_reduce_as_identity(x):
    return op.Identity(x)


# The stock translation of `uint8 >> n` declares an int8 result, which onnxruntime refuses; the
# int4 unpacking (tyllm.quant.int4) shifts uint8 only.
def _uint8_right_shift(x, shift: int):
    return op.BitShift(x, op.Cast(shift, to=onnx.TensorProto.UINT8), direction="RIGHT")


def _all_reduce_function() -> onnx.FunctionProto:
    return helper.make_function(DOMAIN, "AllReduce", ["x"], ["y"],
                                [helper.make_node("Identity", ["x"], ["y"])],
                                [helper.make_opsetid("", 18)])


def mark_all_reduce(model: onnx.ModelProto) -> int:
    """Turns the exporter's stand-in nodes for the collective into `tyllm.AllReduce`."""
    count = 0
    for node in model.graph.node:
        fx = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.fx_node"), "")
        if ALL_REDUCE_TARGET in fx:
            node.op_type, node.domain = "AllReduce", DOMAIN
            count += 1
    model.functions.append(_all_reduce_function())
    model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return count


def safetensors_offsets(path: Path) -> dict[str, tuple[int, int, list[int]]]:
    """name -> (absolute byte offset, byte length, shape) of each tensor in a safetensors file."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + header_len
    offsets = {name: (base + e["data_offsets"][0], e["data_offsets"][1] - e["data_offsets"][0],
                      e["shape"]) for name, e in header.items()}
    for alias, name in json.loads(metadata.get(ALIASES, "{}")).items():
        offsets[alias] = offsets[name]
    return offsets


def _torch_data(tensor) -> int | None:
    raw = getattr(tensor, "raw", None)  # the exporter wraps the program's torch tensors
    return raw.data_ptr() if isinstance(raw, torch.Tensor) and raw.numel() else None


def link_external_weights(model: ir.Model, weights: Path, state_dict: dict) -> int:
    """Points initializers at their bytes in `weights` (a file in the ONNX file's folder), on
    the exporter's IR model, so the weights are never serialized into memory. The compiler may
    have released the memory of the program's tensors saved in `weights` (`state_dict`): one
    of them that does not link is an error, never written."""
    offsets, linked = safetensors_offsets(weights), 0
    saved = {t.data_ptr() for n, t in state_dict.items() if n in offsets and t.numel()}
    for name, value in model.graph.initializers.items():
        entry, tensor = offsets.get(name), value.const_value
        if (entry is not None and tensor is not None and entry[1] == tensor.nbytes
                and list(entry[2]) == list(tensor.shape)):
            value.const_value = ir.ExternalTensor(weights.name, entry[0], entry[1], tensor.dtype,
                                                  shape=tensor.shape, name=name,
                                                  base_dir=weights.parent)
            linked += 1
        elif _torch_data(tensor) in saved:
            raise RuntimeError(f"ONNX initializer {name!r} holds a weight of {weights.name} but "
                               f"does not match its entry there (name, shape or size): the "
                               f"exporter changed it; compile with export_onnx=False.")
    return linked


def with_plain_kernels(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """`program` with each `tyllm::attention(_rows)` and `tyllm::int4_linear` written out in
    standard ops (their references)."""
    references = {torch.ops.tyllm.attention.default: attention_reference,
                  torch.ops.tyllm.attention_rows.default: attention_rows_reference,
                  torch.ops.tyllm.int4_linear.default: int4_linear_reference}
    if not any(n.target in references for n in program.graph.nodes):
        return program
    return program.run_decompositions(references)


def to_onnx_ir(program: torch.export.ExportedProgram, input_names: list[str] | None = None,
               output_names: tuple[str, ...] | None = None) -> ir.Model:
    """The exporter's IR model of `program` (its kernels in standard ops); initializers still
    wrap the program's tensors."""
    return torch.onnx.export(
        with_plain_kernels(program), (), dynamo=True, input_names=input_names,
        output_names=None if output_names is None else list(output_names),
        custom_translation_table={torch.ops.tyllm.all_reduce.default: _all_reduce_as_identity,
                                  torch.ops.aten.__rshift__.Scalar: _uint8_right_shift},
        optimize=False, verify=False, report=False, verbose=False).model


def export_onnx(program: torch.export.ExportedProgram, input_names: list[str], path: Path,
                weights: Path, output_names: tuple[str, ...] = OUTPUT_NAMES) -> None:
    model = to_onnx_ir(program, input_names, output_names)
    link_external_weights(model, weights, program.state_dict)
    model = ir.serde.serialize_model(model)
    mark_all_reduce(model)
    onnx.save(model, str(path))


def relink_onnx(source: Path, dest: Path, weights: Path) -> None:
    """Writes `source`'s graph to `dest` with its initializers pointing into `weights` (another
    die's weights file of the same layout: same names and shapes) instead."""
    model = onnx.load(str(source), load_external_data=False)
    offsets = safetensors_offsets(weights)
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        begin, length, shape = offsets[tensor.name]
        if list(shape) != list(tensor.dims):
            raise RuntimeError(f"{weights.name} holds {tensor.name!r} as {shape}, the program "
                               f"reads {list(tensor.dims)}: these dies do not share a program.")
        del tensor.external_data[:]
        for key, value in (("location", weights.name), ("offset", begin), ("length", length)):
            tensor.external_data.add(key=key, value=str(value))
    onnx.save(model, str(dest))
