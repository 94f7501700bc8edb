"""The one compile core every graph of every tree goes through (LLM steps, VLM language, vision,
mrope and rope-index graphs): a captured program -> its ONNX twin (optional) -> one library per
KV window (or one for a static program)."""

from dataclasses import dataclass, field, replace
from pathlib import Path

from tyllm.artifacts.layout import ensure_parent
from tyllm.backends import Target
from tyllm.capture.export import OUTPUT_NAMES, describe, describe_outputs, export_module
from tyllm.capture.onnx_export import export_onnx

STATIC = None  # the library key of a program without a KV window


@dataclass(frozen=True)
class ProgramFiles:
    """Where a graph's program goes in the tree: a library per library key (KV window, or
    STATIC), its ONNX twin (None: none) and the params file the twin's initializers point
    into."""

    libraries: dict
    onnx: str | None = None
    weights: str | None = None

    def only(self, keys) -> "ProgramFiles":
        return replace(self, libraries={key: self.libraries[key] for key in keys})


@dataclass
class Lowering:
    """Where one compile job works (the staging tree, the target, the report) and its
    timings."""

    root: Path
    target: Target
    report: object
    timings: dict = field(default_factory=dict)

    def timed(self, stage: str):
        return self.report.timed(self.timings, stage)


def twin_and_lower(program, inputs: dict, files: ProgramFiles, at: Lowering,
                   output_names: tuple[str, ...] = OUTPUT_NAMES) -> list[str]:
    """Writes the ONNX twin of `program` and its libraries (`files`); returns the parameter
    binding order."""
    if files.onnx is not None:
        with at.timed("onnx"):
            export_onnx(program, list(inputs), at.root / files.onnx, at.root / files.weights,
                        output_names)
    with at.timed("tvm"):
        paths = {key: ensure_parent(at.root, name) for key, name in files.libraries.items()}
        if list(paths) == [STATIC]:
            return at.target.lower(program, paths[STATIC])
        return at.target.lower_windows(program, paths)


class StaticJob:
    """The compile job (tyllm/compile/jobs.py) of a static program (vision tower, mrope, rope
    index): `build()` -> (module, example inputs, output names), captured once, twinned and
    lowered into `self.files`."""

    files: ProgramFiles

    def build(self) -> tuple:
        raise NotImplementedError

    def __call__(self, root: Path, target: Target, report) -> dict:
        at = Lowering(root, target, report)
        module, inputs, output_names = self.build()
        with at.timed("export"):
            program = export_module(module, inputs)
        order = twin_and_lower(program, inputs, self.files, at, output_names)
        io = {"inputs": [t.as_json() for t in describe(inputs)],
              "outputs": [t.as_json() for t in describe_outputs(program, output_names)],
              "param_order": order}
        return {"io": {STATIC: io}, "timings": at.timings}
