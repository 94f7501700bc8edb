"""Paths of the artifact tree (seed-compatible layout), relative to the `<N>die` folder.

  batch_1/common_die{d}.params          die d's weights, shared by every seq_len graph
  batch_1/constant_die{d}_{M}.params    constants of die d's seq_len-M graph (rope tables)
  batch_1/llm_die{d}_{M}.onnx           ONNX twin of that graph (weights point into common_*)
  batch_1/seqlen_{M}/llm_{prefill|decode}_die{d}.so   the compiled graph (decode when M == 1),
                                        attending to all max_kv_cache_size positions
  batch_1/seqlen_{M}/llm_{prefill|decode}_kv{W}_die{d}.so   the same graph for a KV window of
                                        the first W positions (tyllm/artifacts/windows.py)
  batch_1/seqlen_{M}/llm_die{d}.params  graph-local constants (causal mask of M rows)
  batch_{B}/seqlen_{M}/llm_decode[_kv{W}]_die{d}.so   B > 1: the step for B sequences in one
                                        call (compile/request.py::graph_shapes: decode length only);
                                        its weights and constants are batch_1's files
  batch_1/llm_die{d}_{M}_b{B}.onnx      ONNX twin of a batch-B graph (beside the weights it
                                        points into)
  batch_{B}/seqlen_{K+1}/llm_verify[_kv{W}]_die{d}.so   speculative_tokens K: the step of K + 1
                                        rows per sequence that returns every row's logits (a
                                        verify step), at every batch size; no ONNX twin
  config.json buffer_config.json tokenizer.json manifest.json compile_report.json
  compile.log (framework output and per-graph timings of the compile)
  embedding.params (embedding_as_input) empty.bin
"""

import os
import shutil
from pathlib import Path

BATCH = "batch_1"
CONFIG = "config.json"
BUFFER_CONFIG = "buffer_config.json"
TOKENIZER = "tokenizer.json"
MANIFEST = "manifest.json"
REPORT = "compile_report.json"
COMPILE_LOG = "compile.log"
EMBEDDING = "embedding.params"
EMPTY = "empty.bin"
TOKENIZER_EXTRAS = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                    "chat_template.json", "generation_config.json")
PREPROCESSOR = "preprocessor_config.json"  # VLM trees
SIDE_FILES = (TOKENIZER, *TOKENIZER_EXTRAS, PREPROCESSOR)  # read by name from the tree root


def graph_kind(seq_len: int, verify: bool = False) -> str:
    if verify:
        return "verify"
    return "decode" if seq_len == 1 else "prefill"


def weights_file(die: int) -> str:
    return f"{BATCH}/common_die{die}.params"


def constants_file(die: int, seq_len: int) -> str:
    return f"{BATCH}/constant_die{die}_{seq_len}.params"


def onnx_file(die: int, seq_len: int, batch: int = 1) -> str:
    return f"{BATCH}/llm_die{die}_{seq_len}{'' if batch == 1 else f'_b{batch}'}.onnx"


def library_file(die: int, seq_len: int, window: int | None = None,
                 max_kv: int | None = None, batch: int = 1, suffix: str = ".so",
                 verify: bool = False) -> str:
    """The seed's name for the full window (`window` None or max_kv), `_kv{W}` for others;
    `suffix`: the backend's (backends.library_suffix)."""
    tag = "" if window is None or window == max_kv else f"_kv{window}"
    kind = graph_kind(seq_len, verify)
    return f"batch_{batch}/seqlen_{seq_len}/llm_{kind}{tag}_die{die}{suffix}"


def graph_params_file(die: int, seq_len: int) -> str:
    return f"{BATCH}/seqlen_{seq_len}/llm_die{die}.params"


def ensure_parent(root: Path, relative: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def share_file(source: Path, dest: Path) -> None:
    """`dest` holds what `source` holds: a hard link where the file system allows one (a tree
    stores a program that several dies run once), else a copy."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
