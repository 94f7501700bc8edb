"""A die graph run by onnxruntime: the graph split at its `tyllm.AllReduce` nodes into pieces,
each an onnxruntime session; between two pieces the runtime's collective sums the die
contributions (`tyllm.runtime.collective.all_reduce`)."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import helper, shape_inference
from tyllm.backends.onnx_reference.lower import PARAM_ORDER

from tyllm.capture.onnx_export import DOMAIN
from tyllm.runtime.collective import all_reduce


@dataclass
class Piece:
    session: onnxruntime.InferenceSession
    inputs: list[str]
    outputs: list[str]
    reduce: tuple[str, str] | None  # (input, output) of the all-reduce that follows, if any
    kept: set[str]  # the values read after this piece (the others are dropped)


def is_all_reduce(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == "AllReduce"


def value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    graph = shape_inference.infer_shapes(model).graph
    return {v.name: v.type for v in (*graph.input, *graph.value_info, *graph.output)}


def consumed(nodes: list[onnx.NodeProto]) -> set[str]:
    return {name for node in nodes for name in node.input if name}


def split_nodes(graph: onnx.GraphProto) -> tuple[list[list], list]:
    """The nodes between consecutive all-reduces, and the all-reduce nodes."""
    pieces, reduces, current = [], [], []
    for node in graph.node:
        if is_all_reduce(node):
            pieces.append(current)
            reduces.append(node)
            current = []
        else:
            current.append(node)
    return [*pieces, current], reduces


def piece_model(model: onnx.ModelProto, nodes: list, inputs: list[str], outputs: list[str],
                types: dict) -> onnx.ModelProto:
    graph = model.graph
    used = consumed(nodes)
    initializers = [t for t in graph.initializer if t.name in used]
    value = lambda name: helper.make_value_info(name, types[name])  # noqa: E731
    piece = helper.make_graph(nodes, "piece", [value(n) for n in inputs],
                              [value(n) for n in outputs], initializers)
    return helper.make_model(piece, opset_imports=list(model.opset_import),
                             ir_version=model.ir_version, functions=list(model.functions))


def session(model: onnx.ModelProto) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # the die's own thread
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def reads_after(groups: list[list], reduces: list, outputs: set[str]) -> list[set[str]]:
    """For each piece, the values read after it: by the all-reduce that follows it, by later
    pieces and all-reduces, and the graph outputs."""
    tail, reads = set(outputs), [set()] * len(groups)
    for i in reversed(range(len(groups))):
        reads[i] = tail | ({reduces[i].input[0]} if i < len(reduces) else set())
        tail = reads[i] | consumed(groups[i])
    return reads


def make_pieces(model: onnx.ModelProto) -> list[Piece]:
    graph, types = model.graph, value_types(model)
    groups, reduces = split_nodes(graph)
    initialized = {t.name for t in graph.initializer}
    reads = reads_after(groups, reduces, {o.name for o in graph.output})
    pieces = []
    for i, nodes in enumerate(groups):
        produced = {o for n in nodes for o in n.output if o}
        inputs = sorted(consumed(nodes) - produced - initialized)
        outputs = sorted(produced & reads[i])
        reduce = (reduces[i].input[0], reduces[i].output[0]) if i < len(reduces) else None
        pieces.append(Piece(session(piece_model(model, nodes, inputs, outputs, types)),
                            inputs, outputs, reduce, reads[i]))
    return pieces


def as_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        raise TypeError("onnxruntime has no bfloat16 kernels for these graphs: compile a "
                        "bfloat16 model for the emulated_cpu backend, or in float16/float32.")
    return t.detach().contiguous().numpy()


class SegmentedProgram:
    """One graph of one die. Inputs and outputs are torch tensors; parameters are fed by name
    (numpy views of the die's weights, never copied)."""

    def __init__(self, library: Path, params: list[torch.Tensor]):
        model = onnx.load(str(library))
        names = json.loads(next(p.value for p in model.metadata_props if p.key == PARAM_ORDER))
        self._params = {n: as_numpy(p) for n, p in zip(names, params, strict=True)}
        self._inputs = [i.name for i in model.graph.input if i.name not in self._params]
        self._outputs = [o.name for o in model.graph.output]
        self._pieces = make_pieces(model)

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        values = dict(zip(self._inputs, (as_numpy(t) for t in inputs), strict=True))
        for piece in self._pieces:
            feed = {n: values[n] if n in values else self._params[n] for n in piece.inputs}
            values.update(zip(piece.outputs, piece.session.run(piece.outputs, feed), strict=True))
            if piece.reduce is not None:
                x = torch.from_numpy(values[piece.reduce[0]])
                values[piece.reduce[1]] = all_reduce(x).numpy()
            values = {n: v for n, v in values.items() if n in piece.kept}
        return [torch.from_numpy(values[n]) for n in self._outputs]
