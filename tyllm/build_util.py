"""Seed-compatible entry point: `build_and_compile_llm(...)`."""

from pathlib import Path

from tyllm.backends import DEFAULT as DEFAULT_BACKEND
from tyllm.compile.llm import compile_llm
from tyllm.compile.request import CompileRequest


def build_and_compile_llm(model_path, artifacts_path, max_kv_cache_size: int = 4096,
                          seq_len_list=(1, 8), dev_count: int = 1,
                          embedding_as_input: bool = False, *, dtype: str = "float32",
                          num_threads: int = 0, export_onnx: bool = True,
                          progress: bool = True, verbose: bool = False,
                          use_cache: bool = True, kv_windows=None, batch_size_list=(1,),
                          backend: str = DEFAULT_BACKEND, jobs: int = 0,
                          speculative_tokens: int = 0) -> str:
    """Compiles a HF checkpoint folder into the `<N>die` artifact tree at `artifacts_path`.

    `use_cache`: take programs compiled before from the program cache and keep new ones there
    (tyllm/compile/program_cache.py), so an interrupted compile resumes where it stopped.
    `kv_windows`: the history lengths each graph is compiled for besides max_kv_cache_size (a
    step attends over the smallest that holds its history); default: 256, 1024, 4096, ... below
    max_kv_cache_size (tyllm/artifacts/windows.py). `[max_kv_cache_size]` compiles the full
    window only.
    `batch_size_list`: decode graphs for that many sequences in one call (batch_{B}/ folders;
    batch 1 is always compiled and runs every prefill), e.g. [1, 4] to serve 4 users at once.
    `jobs`: worker processes compiling distinct programs in parallel (0: one per core; each
    holds at most one die's weights). `speculative_tokens` K: verify graphs of K + 1 rows at
    every batch size, which speculative decoding needs to check K proposed tokens in one step
    (tyllm/speculate/). `progress`: a progress bar and a final line on stderr;
    framework output goes to the tree's `compile.log` unless `verbose`. Returns the artifacts
    path. See docs/ARCHITECTURE.md for the
    tree layout.
    """
    request = CompileRequest(
        model_path, artifacts_path, max_kv_cache_size=max_kv_cache_size,
        seq_len_list=tuple(seq_len_list), dev_count=dev_count,
        embedding_as_input=embedding_as_input, dtype=dtype, num_threads=num_threads,
        export_onnx=export_onnx, progress=progress, verbose=verbose, use_cache=use_cache,
        kv_windows=None if kv_windows is None else tuple(kv_windows),
        batch_size_list=batch_size_list, backend=backend, jobs=jobs,
        speculative_tokens=speculative_tokens)
    return str(compile_llm(request))


def build_and_compile_vlm(model_path, artifacts_path, num_die: int = 1,
                          image_sizes=((448, 448),), modalities=("image",), prefill_lens=(),
                          max_model_len: int = 4096, vm_die_remap=None, lm_die_remap=None, *,
                          source_tokenizer=None, dtype: str = "float32", num_threads: int = 0,
                          export_onnx: bool = True, progress: bool = True,
                          verbose: bool = False, kv_windows=None, use_cache: bool = True,
                          batch_size_list=(1,), jobs: int = 0,
                          backend: str = DEFAULT_BACKEND, speculative_tokens: int = 0) -> str:
    """Compiles a Qwen2.5-VL / Qwen3-VL folder into the `<N>die` tree at `artifacts_path`
    (the Python form of scripts/compile_vlm.py). `batch_size_list` as for
    build_and_compile_llm: language decode graphs for that many sequences per call; `jobs`,
    `backend` and `speculative_tokens` (the language model's verify graphs) as for
    build_and_compile_llm. Returns the artifacts path."""
    from tyllm.compile.vlm import compile_vlm
    from tyllm.compile.vlm_request import VlmCompileRequest

    request = VlmCompileRequest(
        model_path, artifacts_path, num_die=num_die,
        image_sizes=tuple(tuple(s) for s in image_sizes), modalities=tuple(modalities),
        prefill_lens=tuple(prefill_lens), max_model_len=max_model_len,
        vm_die_remap=tuple(vm_die_remap) if vm_die_remap else None,
        lm_die_remap=tuple(lm_die_remap) if lm_die_remap else None,
        source_tokenizer=Path(source_tokenizer) if source_tokenizer else None, dtype=dtype,
        num_threads=num_threads, export_onnx=export_onnx, progress=progress, verbose=verbose,
        kv_windows=None if kv_windows is None else tuple(kv_windows), use_cache=use_cache,
        batch_size_list=batch_size_list, jobs=jobs, backend=backend,
        speculative_tokens=speculative_tokens)
    return str(compile_vlm(request))
