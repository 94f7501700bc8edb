"""Lowering for the ONNX reference backend: a captured program -> an ONNX graph whose weights and
constants are graph inputs (bound at load, never stored in the file), with the die all-reduce as
`tyllm.AllReduce` nodes that the runtime's collective executes (program.py)."""

import json
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir
import onnxruntime
import torch
from torch.export.graph_signature import InputKind

from tyllm.artifacts.layout import share_file
from tyllm.capture.onnx_export import mark_all_reduce, to_onnx_ir

PARAM_ORDER = "tyllm.param_order"  # model metadata: the parameter names, in binding order
NAME = "onnx_reference"


def parameter_names(program: torch.export.ExportedProgram) -> list[str]:
    """The program's parameters (weights and per-graph constant tables), in the order the
    runtime binds them; its buffers stay in the graph, as the emulated CPU backend keeps them."""
    return [s.target for s in program.graph_signature.input_specs
            if s.kind == InputKind.PARAMETER]


def as_graph_inputs(model: ir.Model, names: list[str]) -> None:
    """Turns the initializers named `names` into graph inputs (their values are never read:
    a compile has released the weights' memory by now)."""
    graph = model.graph
    for name in names:
        value = graph.initializers.pop(name, None)
        if value is None:
            continue  # the exporter dropped an unused parameter: bound at load, never fed
        tensor, value.const_value = value.const_value, None
        value.dtype, value.shape = tensor.dtype, ir.Shape(tensor.shape)
        graph.inputs.append(value)


def export_program(program: torch.export.ExportedProgram, path: Path) -> list[str]:
    names = parameter_names(program)
    model = to_onnx_ir(program)
    as_graph_inputs(model, names)
    proto = ir.serde.serialize_model(model)
    mark_all_reduce(proto)
    proto.metadata_props.add(key=PARAM_ORDER, value=json.dumps(names))
    onnx.save(proto, str(path))
    return names


@dataclass(frozen=True)
class OnnxTarget:
    """onnxruntime on the host CPU, one thread per die; plain [N, K] linear weights."""

    num_cores: int = 1
    weight_panels: None = None

    def as_json(self) -> dict:
        return {"backend": NAME, "onnxruntime": onnxruntime.__version__,
                "opset": onnx.defs.onnx_opset_version()}

    def lower(self, program: torch.export.ExportedProgram, library: Path) -> list[str]:
        return export_program(program, library)

    def lower_windows(self, program: torch.export.ExportedProgram,
                      libraries: dict[int, Path]) -> list[str]:
        """The graph keeps its KV window symbolic: one file serves every window (a hard link
        per window's name)."""
        first, *others = libraries.values()
        names = export_program(program, first)
        for path in others:
            share_file(first, path)
        return names
