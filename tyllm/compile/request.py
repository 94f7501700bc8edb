"""A compile request, validated before any work starts."""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tyllm.artifacts.windows import kv_windows
from tyllm.backends import DEFAULT as DEFAULT_BACKEND
from tyllm.backends import UnknownBackend, get_backend
from tyllm.dtypes import DTYPES
from tyllm.errors import TyllmError


class StepShapes:
    """The (batch, seq_len) step graphs of a request with `seq_len_list` and `batch_size_list`
    (LLM and VLM language models alike)."""

    @property
    def batches(self) -> list[int]:
        return sorted({1, *self.batch_size_list})

    @property
    def graph_shapes(self) -> list[tuple[int, int]]:
        """Batch 1 at every seq_len (prefill and decode); each larger batch at the decode
        length, the smallest seq_len."""
        decode = min(self.seq_len_list)
        return ([(1, m) for m in sorted(self.seq_len_list)]
                + [(b, decode) for b in self.batches if b > 1])


@dataclass(frozen=True)
class CompileRequest(StepShapes):
    model_path: Path
    artifacts_path: Path
    max_kv_cache_size: int = 4096
    seq_len_list: tuple[int, ...] = (1, 8)
    dev_count: int = 1
    embedding_as_input: bool = False
    dtype: str = "float32"
    num_threads: int = 0  # cores a compiled graph may use; 0: all of this machine's
    jobs: int = 0  # worker processes compiling programs in parallel; 0: one per core
    export_onnx: bool = True
    use_cache: bool = True  # reuse and keep compiled programs (tyllm/compile/program_cache.py)
    kv_windows: tuple[int, ...] | None = None  # KV windows per graph; None: windows.py's ladder
    batch_size_list: tuple[int, ...] = (1,)  # sequences per decode call (batch 1 is always built)
    backend: str = DEFAULT_BACKEND  # backends.REGISTRY
    progress: bool = field(default=True, compare=False)
    verbose: bool = field(default=False, compare=False)  # framework output live, not only logged

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def windows(self) -> list[int]:
        return kv_windows(self.max_kv_cache_size, self.kv_windows)

    def target(self):
        return backend_named(self.backend).target(self.num_threads or os.cpu_count() or 1)


def validate(request: CompileRequest) -> None:
    lens = list(request.seq_len_list)
    if not lens:
        raise TyllmError("seq_len_list is empty: give at least one graph length, e.g. [1, 8].")
    if len(set(lens)) != len(lens):
        raise TyllmError(f"seq_len_list {lens} has duplicates: list each length once.")
    if any(not isinstance(m, int) or m < 1 for m in lens):
        raise TyllmError(f"seq_len_list {lens} must hold positive integers.")
    if request.max_kv_cache_size < 1:
        raise TyllmError(f"max_kv_cache_size={request.max_kv_cache_size} must be positive.")
    too_long = [m for m in lens if m > request.max_kv_cache_size]
    if too_long:
        raise TyllmError(f"seq_len {too_long} exceeds max_kv_cache_size="
                         f"{request.max_kv_cache_size}: raise max_kv_cache_size or use shorter "
                         f"seq_lens.")
    if not isinstance(request.dev_count, int) or request.dev_count < 1:
        raise TyllmError(f"dev_count={request.dev_count} is invalid: use 1 or more dies.")
    validate_shared(request, request.max_kv_cache_size, request.dev_count, "dev_count")


def validate_shared(request, max_kv: int, dies: int, die_option: str) -> None:
    """What every compile request (LLM and VLM) checks the same way: KV windows, batch sizes,
    backend, dtype, the model folder and the `<N>die` destination."""
    kv_windows(max_kv, request.kv_windows)
    check_batch_sizes(request.batch_size_list)
    if not isinstance(request.jobs, int) or isinstance(request.jobs, bool) or request.jobs < 0:
        raise TyllmError(f"jobs={request.jobs!r} is invalid: give the number of compile worker "
                         f"processes (1 or more), or 0 for one per core.")
    backend_named(request.backend)
    if request.dtype not in DTYPES:
        raise TyllmError(f"dtype={request.dtype!r} is not supported; choose one of "
                         f"{list(DTYPES)}.")
    check_model_folder(request.model_path)
    check_die_folder(request.artifacts_path, dies, die_option)


MAX_BATCH = 64


def check_batch_sizes(sizes) -> None:
    listed = isinstance(sizes, list | tuple)
    bad = [b for b in (sizes if listed else []) if not isinstance(b, int) or
           isinstance(b, bool) or not 1 <= b <= MAX_BATCH]
    if not listed or not sizes or bad or len(set(sizes)) != len(sizes):
        raise TyllmError(f"batch_size_list {sizes} must list distinct integers from 1 to "
                         f"{MAX_BATCH} (sequences decoded in one call), e.g. [1, 4].")


def backend_named(name: str):
    try:
        return get_backend(name)
    except UnknownBackend as e:
        raise TyllmError(str(e)) from None


def check_model_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise TyllmError(f"Model path {path} is a file: pass the checkpoint's folder (the one "
                         f"holding config.json, the safetensors weights and tokenizer.json).")
    if not path.is_dir():
        raise TyllmError(f"Model folder {path} does not exist: pass the folder of a HF "
                         f"checkpoint (config.json, safetensors weights, tokenizer.json).")


def check_die_folder(dest: Path, dies: int, option: str) -> None:
    """A destination named `<K>die` must be compiled for K dies: every loader refuses others."""
    named = re.fullmatch(r"(\d+)die", dest.name)
    if named and int(named[1]) != dies:
        raise TyllmError(f"The destination {dest} is named for {named[1]} dies but {option}="
                         f"{dies}: write to {dest.parent / f'{dies}die'} or set {option}="
                         f"{named[1]}.")
