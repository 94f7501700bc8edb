"""A compile request, validated before any work starts: what LLM and VLM requests share
(`Request`) and the LLM's own (`CompileRequest`)."""

import os
import re
from dataclasses import KW_ONLY, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch

from tyllm.artifacts.windows import kv_windows
from tyllm.backends import DEFAULT as DEFAULT_BACKEND
from tyllm.backends import UnknownBackend, get_backend
from tyllm.dtypes import DTYPES
from tyllm.errors import TyllmError

MAX_BATCH = 64


class GraphShape(NamedTuple):
    """One step graph's shape: `batch` sequences of `seq_len` rows each. A verify graph
    (speculative decoding) returns the logits of every row, the others the last valid row's."""

    batch: int
    seq_len: int
    verify: bool = False


@dataclass(frozen=True)
class Request:
    """What every compile request holds. Subclasses name the fields behind `dies` and `max_kv`
    (`dies_field`, `max_kv_field`) and give `seq_len_list`; `options` maps a field to how the
    user spelled it (a CLI flag), for error messages: the Python keyword when absent."""

    dies_field: ClassVar[str]
    max_kv_field: ClassVar[str]

    model_path: Path
    artifacts_path: Path  # the `<N>die` folder
    _: KW_ONLY
    dtype: str = "float32"
    num_threads: int = 0  # cores a compiled graph may use; 0: all of this machine's
    jobs: int = 0  # worker processes compiling programs in parallel; 0: one per core
    export_onnx: bool = True
    use_cache: bool = True  # reuse and keep compiled programs (tyllm/compile/program_cache.py)
    kv_windows: tuple[int, ...] | None = None  # KV windows per graph; None: windows.py's ladder
    batch_size_list: tuple[int, ...] = (1,)  # sequences per decode call (batch 1 always built)
    speculative_tokens: int = 0  # k > 0: verify graphs of k + 1 rows at every batch size
    backend: str = DEFAULT_BACKEND  # backends.REGISTRY
    progress: bool = field(default=True, compare=False)
    verbose: bool = field(default=False, compare=False)  # framework output live, not only logged
    options: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        """Paths as Path and list options as tuples (anything else is left for validation)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("model_path", "artifacts_path"):
                object.__setattr__(self, f.name, Path(value))
            elif isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    def option(self, name: str) -> str:
        """How the user spelled field `name`: the CLI's flag, or the Python keyword."""
        return self.options.get(name, name)

    @property
    def dies(self) -> int:
        """Dies of the (language) model."""
        return getattr(self, self.dies_field)

    @property
    def max_kv(self) -> int:
        """KV cache positions of the (language) model."""
        return getattr(self, self.max_kv_field)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def windows(self) -> list[int]:
        return kv_windows(self.max_kv, self.kv_windows, self.window_options)

    @property
    def window_options(self) -> tuple[str, str]:
        """How the user spelled the KV windows and the cache size (windows.kv_windows)."""
        return self.option("kv_windows"), self.option(self.max_kv_field)

    def target(self):
        return backend_named(self.backend).target(self.num_threads or os.cpu_count() or 1)

    @property
    def batches(self) -> list[int]:
        return sorted({1, *self.batch_size_list})

    @property
    def graph_shapes(self) -> list[GraphShape]:
        """Batch 1 at every seq_len (prefill and decode); each larger batch at the decode
        length, the smallest seq_len; with speculative tokens k, a verify graph of k + 1 rows
        at every batch size."""
        decode = min(self.seq_len_list)
        verify = self.speculative_tokens + 1
        return ([GraphShape(1, m) for m in sorted(self.seq_len_list)]
                + [GraphShape(b, decode) for b in self.batches if b > 1]
                + [GraphShape(b, verify, True) for b in self.batches
                   if self.speculative_tokens])

    @property
    def step_lengths(self) -> list[int]:
        """Every row count a step graph has (each has its own constants: causal mask, rope)."""
        return sorted({s.seq_len for s in self.graph_shapes})


@dataclass(frozen=True)
class CompileRequest(Request):
    """An LLM tree's request (the keywords of build_and_compile_llm)."""

    dies_field: ClassVar[str] = "dev_count"
    max_kv_field: ClassVar[str] = "max_kv_cache_size"

    max_kv_cache_size: int = 4096
    seq_len_list: tuple[int, ...] = (1, 8)
    dev_count: int = 1
    embedding_as_input: bool = False


def validate(request: CompileRequest) -> None:
    o, lens = request.option, list(request.seq_len_list)
    if not lens:
        raise TyllmError(f"{o('seq_len_list')} is empty: give at least one graph length, "
                         f"e.g. [1, 8].")
    check_distinct(lens, o("seq_len_list"), "list each length once.")
    if any(not isinstance(m, int) or m < 1 for m in lens):
        raise TyllmError(f"{o('seq_len_list')} {lens} must hold positive integers.")
    check_lengths(request, lens)
    check_dies(request)
    validate_common(request)


def check_lengths(request: CompileRequest, lens: list[int]) -> None:
    max_kv = f"{request.option('max_kv_cache_size')}={request.max_kv}"
    if request.max_kv < 1:
        raise TyllmError(f"{max_kv} must be positive.")
    too_long = [m for m in lens if m > request.max_kv]
    if too_long:
        raise TyllmError(f"seq_len {too_long} exceeds {max_kv}: raise "
                         f"{request.option('max_kv_cache_size')} or use shorter "
                         f"{request.option('seq_len_list')}.")


def check_dies(request: Request) -> None:
    if not isinstance(request.dies, int) or isinstance(request.dies, bool) or request.dies < 1:
        raise TyllmError(f"{request.option(request.dies_field)}={request.dies} is invalid: use "
                         f"1 or more dies.")


def validate_common(request: Request) -> None:
    """What every compile request (LLM and VLM) checks the same way: KV windows, batch sizes,
    speculative tokens, jobs, backend, dtype, the model folder and the `<N>die` destination."""
    kv_windows(request.max_kv, request.kv_windows, request.window_options)
    check_batch_sizes(request.batch_size_list, request.option("batch_size_list"))
    check_speculative_tokens(request)
    jobs = request.jobs
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 0:
        raise TyllmError(f"{request.option('jobs')}={jobs!r} is invalid: give the number of "
                         f"compile worker processes (1 or more), or 0 for one per core.")
    backend_named(request.backend)
    if request.dtype not in DTYPES:
        raise TyllmError(f"{request.option('dtype')}={request.dtype!r} is not supported; "
                         f"choose one of {list(DTYPES)}.")
    check_model_folder(request.model_path)
    check_die_folder(request.artifacts_path, request.dies, request.option(request.dies_field))


def check_distinct(values, option: str, fix: str) -> None:
    """Refuses a list that names a value twice (the one rule of every list option)."""
    values, twice = list(values), []
    for i, v in enumerate(values):
        if v in values[:i] and v not in twice:
            twice.append(v)
    if twice:
        raise TyllmError(f"{option} {values} has duplicates ({', '.join(map(str, twice))}): "
                         f"{fix}")


def check_batch_sizes(sizes, option: str = "batch_size_list") -> None:
    listed = isinstance(sizes, list | tuple)
    fix = (f"list distinct integers from 1 to {MAX_BATCH} (sequences decoded in one call), "
           f"e.g. [1, 4].")
    if listed:
        check_distinct(sizes, option, fix)
    bad = [b for b in (sizes if listed else []) if not isinstance(b, int) or
           isinstance(b, bool) or not 1 <= b <= MAX_BATCH]
    if not listed or not sizes or bad:
        raise TyllmError(f"{option} {sizes} must {fix}")


def check_speculative_tokens(request: Request) -> None:
    k, option = request.speculative_tokens, request.option("speculative_tokens")
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise TyllmError(f"{option}={k!r} is invalid: give the number of proposed tokens a "
                         f"verify step checks (e.g. 4), or 0 for no verify graphs.")
    if k + 1 > request.max_kv:
        raise TyllmError(f"{option}={k} needs verify graphs of {k + 1} rows, more than the KV "
                         f"cache of {request.max_kv}: use at most {request.max_kv - 1}.")


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
