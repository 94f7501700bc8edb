"""Paths of the VLM parts of a tree, relative to the `<N>die` folder (the language model keeps the
LLM layout under batch_1/, see tyllm/artifacts/layout.py).

  visual/vit_die{v}.so                 vision program v at the default image size
  visual/vit_die{v}_{H}x{W}.so         ... at another compiled size
  visual/constant_die{v}.params        vision program v's weights (all sizes)
  visual/grid_die{v}_{H}x{W}.params    grid constants of a size (rope, position embeddings, windows)
  visual/vit_die{v}_{H}x{W}.onnx       ONNX twin (weights point into constant_die{v}.params)
  visual/aot_config.json buffer_config.json graph.json
  mrope/mrope_die{d}_{M}.so / .params  3-axis positions -> rope cos/sin, per language die and M
  compute_rope_param.so / .params      the rope-index graph
"""

from tyllm.artifacts.layout import PREPROCESSOR  # noqa: F401  (a file of the tree root)

VISUAL = "visual"
MROPE = "mrope"
ROPE_INDEX_PARAMS = "compute_rope_param.params"


def size_tag(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def vit_library(die: int, size, default: bool, suffix: str = ".so") -> str:
    return f"{VISUAL}/vit_die{die}{'' if default else f'_{size_tag(size)}'}{suffix}"


def vit_weights(die: int) -> str:
    return f"{VISUAL}/constant_die{die}.params"


def vit_grid_params(die: int, size) -> str:
    return f"{VISUAL}/grid_die{die}_{size_tag(size)}.params"


def vit_onnx(die: int, size) -> str:
    return f"{VISUAL}/vit_die{die}_{size_tag(size)}.onnx"


def mrope_library(die: int, seq_len: int, suffix: str = ".so") -> str:
    return f"{MROPE}/mrope_die{die}_{seq_len}{suffix}"


def rope_index_library(suffix: str = ".so") -> str:
    return f"compute_rope_param{suffix}"


def mrope_params(die: int, seq_len: int) -> str:
    return f"{MROPE}/mrope_die{die}_{seq_len}.params"
