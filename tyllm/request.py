"""A compile request, validated before any work starts."""

from dataclasses import dataclass, field
from pathlib import Path

import torch

from tyllm.errors import TyllmError

DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class CompileRequest:
    model_path: Path
    artifacts_path: Path
    max_kv_cache_size: int = 4096
    seq_len_list: tuple[int, ...] = (1, 8)
    dev_count: int = 1
    embedding_as_input: bool = False
    dtype: str = "float32"
    num_threads: int = 0  # cores a compiled graph may use; 0: all of this machine's
    export_onnx: bool = True
    progress: bool = field(default=True, compare=False)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


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
    if request.dtype not in DTYPES:
        raise TyllmError(f"dtype={request.dtype!r} is not supported; choose one of "
                         f"{list(DTYPES)}.")
    if not request.model_path.is_dir():
        raise TyllmError(f"Model folder {request.model_path} does not exist.")
