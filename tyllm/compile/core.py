"""The one compile core every graph of every tree goes through (LLM steps, VLM language, vision,
mrope and rope-index graphs): a captured program -> its ONNX twin (optional) -> one library per
KV window (or one for a static program), and the placing of a program compiled already."""

import shutil
from pathlib import Path

from tyllm.artifacts.layout import ensure_parent, share_file
from tyllm.backends import Target
from tyllm.capture.export import OUTPUT_NAMES, describe, describe_outputs, export_module
from tyllm.capture.onnx_export import export_onnx, relink_onnx

STATIC = None  # the library key of a program without a KV window


def twin_and_lower(program, inputs: dict, root: Path, libraries: dict, target: Target,
                   timings: dict, report, onnx: str | None = None,
                   onnx_weights: str | None = None,
                   output_names: tuple[str, ...] = OUTPUT_NAMES) -> list[str]:
    """Writes the ONNX twin of `program` (initializers pointing into `onnx_weights`) and one
    library per entry of `libraries` (KV window -> file; {STATIC: file} for a static program);
    returns the parameter binding order."""
    if onnx is not None:
        with report.timed(timings, "onnx"):
            export_onnx(program, list(inputs), root / onnx, root / onnx_weights, output_names)
    with report.timed(timings, "tvm"):
        paths = {key: ensure_parent(root, name) for key, name in libraries.items()}
        if list(paths) == [STATIC]:
            return target.lower(program, paths[STATIC])
        return target.lower_windows(program, paths)


def place_program(library: Path, twin: Path | None, root: Path, dest_library: str,
                  dest_onnx: str | None, onnx_weights: str | None, copy: bool = False) -> None:
    """Another graph runs a program compiled already: the same library file (a hard link, or a
    copy with `copy` or where links fail) and its ONNX graph relinked to `onnx_weights`."""
    place = shutil.copyfile if copy else share_file
    place(library, ensure_parent(root, dest_library))
    if dest_onnx is not None and twin is not None:
        relink_onnx(twin, root / dest_onnx, root / onnx_weights)


def compile_module(module, inputs: dict, output_names: tuple[str, ...], root: Path,
                   library: str, target: Target, timings: dict, report,
                   onnx: str | None = None, onnx_weights: str | None = None) -> dict:
    """A static module (vision tower, mrope, rope index): capture, twin, lower; its entry."""
    with report.timed(timings, "export"):
        program = export_module(module, inputs)
    order = twin_and_lower(program, inputs, root, {STATIC: library}, target, timings, report,
                           onnx, onnx_weights, output_names)
    return {"library": library, "onnx": onnx,
            "inputs": [t.as_json() for t in describe(inputs)],
            "outputs": [t.as_json() for t in describe_outputs(program, output_names)],
            "param_order": order}

