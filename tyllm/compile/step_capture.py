"""A die's step module on its way to a library: its weights written and released, then one
capture per (batch, M) lowered once per KV window."""

from pathlib import Path

import torch

from tyllm.artifacts import layout
from tyllm.artifacts.params import save_params
from tyllm.capture.export import describe, describe_outputs, export_step, window_inputs
from tyllm.compile.core import Lowering, ProgramFiles, twin_and_lower
from tyllm.compile.memory import return_free_memory
from tyllm.models.loading import die_weights


def save_die_weights(root: Path, plan, step) -> None:
    """Writes `common_die{d}.params`, then releases the weights: a compile holds one die's
    weights once, and only until they are on disk."""
    weights = die_weights(step)
    save_params(layout.ensure_parent(root, layout.weights_file(plan.die)), weights)
    release_weights(weights)


def release_weights(weights: dict[str, torch.nn.Parameter]) -> None:
    """Swaps weights for untouched memory of the same shapes: capture, the ONNX twin
    (initializers linked to the params file) and TVM (parameters detached) need shapes only.
    Every weight goes before any stand-in is allocated, so none reuses resident memory."""
    shapes = {name: (p.shape, p.dtype) for name, p in weights.items()}
    for p in weights.values():
        p.data = torch.empty(0, dtype=p.dtype)
    return_free_memory()
    for name, p in weights.items():
        p.data = torch.empty(shapes[name][0], dtype=shapes[name][1])


def capture_windows(step, shape, files: ProgramFiles, at: Lowering, make_inputs) -> dict:
    """Captures the step of `shape` (compile/request.py::GraphShape) once (its KV window
    symbolic), writes its ONNX twin and lowers one library per window of `files`; returns
    window -> io."""
    batch, m, verify = shape
    with at.timed("export"):
        program, inputs = export_step(step, m, make_inputs, batch, verify)
    order = twin_and_lower(program, inputs, files, at)
    outputs = [t.as_json() for t in describe_outputs(program)]
    return {w: {"inputs": [t.as_json() for t in window_inputs(describe(inputs), w)],
                "outputs": outputs, "param_order": order} for w in files.libraries}
