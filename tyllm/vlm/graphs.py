"""Capture -> (ONNX twin) -> TVM library for one module, with its buffer_config entry."""

from pathlib import Path

from backends import Target
from tyllm.artifacts.layout import ensure_parent, share_file
from tyllm.capture.export import describe, describe_outputs, export_module
from tyllm.capture.onnx_export import export_onnx, relink_onnx


def compile_module(module, inputs: dict, output_names: tuple[str, ...], root: Path,
                   library: str, target: Target, timings: dict, report,
                   onnx: str | None = None, onnx_weights: str | None = None) -> dict:
    with report.timed(timings, "export"):
        program = export_module(module, inputs)
    if onnx is not None:
        with report.timed(timings, "onnx"):
            export_onnx(program, list(inputs), root / onnx, root / onnx_weights, output_names)
    with report.timed(timings, "tvm"):
        order = target.lower(program, ensure_parent(root, library))
    return {"library": library, "onnx": onnx,
            "inputs": [t.as_json() for t in describe(inputs)],
            "outputs": [t.as_json() for t in describe_outputs(program, output_names)],
            "param_order": order}


def share_module(twin: dict, root: Path, library: str, timings: dict, report,
                 onnx: str | None = None, onnx_weights: str | None = None) -> dict:
    """The entry of a module whose program `twin` already compiled: the same library file, the
    same ONNX graph pointing into `onnx_weights`."""
    with report.timed(timings, "shared"):
        share_file(root / twin["library"], ensure_parent(root, library))
        if onnx is not None:
            relink_onnx(root / twin["onnx"], root / onnx, root / onnx_weights)
    return {**twin, "library": library, "onnx": onnx}
