"""The ONNX reference backend: each die's captured graph runs in onnxruntime, split at its
all-reduces, which the runtime's collective performs between the pieces (the same collective the
emulated CPU backend's graphs call). A debugging aid: a tree compiled for both backends tells
whether a mismatch comes from the TVM lowering or from the graph itself."""

from pathlib import Path

from tyllm.backends.onnx_reference import probe
from tyllm.backends.onnx_reference.lower import NAME, OnnxTarget
from tyllm.backends.onnx_reference.program import SegmentedProgram

__all__ = ["BACKEND", "OnnxTarget", "SegmentedProgram"]


class OnnxReference:
    name = NAME
    library_suffix = ".onnx"
    library_magic = b"\x08"  # an ONNX ModelProto: field 1 (ir_version), serialized first
    tree_packages = ()  # ONNX files, which any onnxruntime of the pinned range runs

    def target(self, num_cores: int) -> OnnxTarget:
        return OnnxTarget(num_cores=num_cores)

    def load(self, library: Path, params: list) -> SegmentedProgram:
        return SegmentedProgram(library, params)

    def pin_threads(self, cores: set[int]) -> None:
        """Nothing: each session runs on the calling thread alone (program.py), whose cores
        the runtime set."""

    def check(self) -> list[tuple[bool, str]]:
        return probe.check()


BACKEND = OnnxReference()
