"""The ONNX reference backend: each die's captured graph runs in onnxruntime, split at its
all-reduces, which the runtime's collective performs between the pieces (the same collective the
emulated CPU backend's graphs call). A debugging aid: a tree compiled for both backends tells
whether a mismatch comes from the TVM lowering or from the graph itself."""

from pathlib import Path

from tyllm.backends.onnx_reference.lower import NAME, OnnxTarget
from tyllm.backends.onnx_reference.program import SegmentedProgram

__all__ = ["BACKEND", "OnnxTarget", "SegmentedProgram"]


class OnnxReference:
    name = NAME
    library_suffix = ".onnx"

    def target(self, num_cores: int) -> OnnxTarget:
        return OnnxTarget(num_cores=num_cores)

    def load(self, library: Path, params: list) -> SegmentedProgram:
        return SegmentedProgram(library, params)


BACKEND = OnnxReference()
