"""Seed-compatible entry point: `build_and_compile_llm(...)`."""

from pathlib import Path

from tyllm.compiler import compile_llm
from tyllm.request import CompileRequest


def build_and_compile_llm(model_path, artifacts_path, max_kv_cache_size: int = 4096,
                          seq_len_list=(1, 8), dev_count: int = 1,
                          embedding_as_input: bool = False, *, dtype: str = "float32",
                          num_threads: int = 0, export_onnx: bool = True,
                          progress: bool = True) -> str:
    """Compiles a HF checkpoint folder into the `<N>die` artifact tree at `artifacts_path`.

    Returns the artifacts path. See docs/ARCHITECTURE.md for the tree layout.
    """
    request = CompileRequest(
        model_path=Path(model_path), artifacts_path=Path(artifacts_path),
        max_kv_cache_size=max_kv_cache_size, seq_len_list=tuple(seq_len_list),
        dev_count=dev_count, embedding_as_input=embedding_as_input, dtype=dtype,
        num_threads=num_threads, export_onnx=export_onnx, progress=progress)
    return str(compile_llm(request))
