"""A VLM compile request (the flags of scripts/compile_vlm.py), validated before any work."""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tyllm.artifacts.windows import kv_windows
from tyllm.backends import DEFAULT as DEFAULT_BACKEND
from tyllm.compile.request import StepShapes, backend_named, validate_shared
from tyllm.dtypes import DTYPES
from tyllm.errors import TyllmError

MODALITIES = ("image", "video")


@dataclass(frozen=True)
class VlmCompileRequest(StepShapes):
    model_path: Path
    artifacts_path: Path  # the `<N>die` folder
    num_die: int = 1
    image_sizes: tuple[tuple[int, int], ...] = ((448, 448),)  # (height, width), first = default
    modalities: tuple[str, ...] = ("image",)
    prefill_lens: tuple[int, ...] = ()
    max_model_len: int = 4096
    vm_die_remap: tuple[int, ...] | None = None  # physical die of each vision program
    lm_die_remap: tuple[int, ...] | None = None  # physical die of each language program
    source_tokenizer: Path | None = None
    dtype: str = "float32"
    num_threads: int = 0
    jobs: int = 0  # worker processes compiling programs in parallel; 0: one per core
    export_onnx: bool = True
    kv_windows: tuple[int, ...] | None = None  # KV windows per graph; None: windows.py's ladder
    use_cache: bool = True  # language programs reused from / kept in tyllm/compile/program_cache.py
    batch_size_list: tuple[int, ...] = (1,)  # sequences per language decode call
    backend: str = DEFAULT_BACKEND  # backends.REGISTRY
    progress: bool = field(default=True, compare=False)
    verbose: bool = field(default=False, compare=False)  # framework output live, not only logged

    @property
    def torch_dtype(self):
        return DTYPES[self.dtype]

    @property
    def windows(self) -> list[int]:
        return kv_windows(self.max_model_len, self.kv_windows)

    def target(self):
        return backend_named(self.backend).target(self.num_threads or os.cpu_count() or 1)

    @property
    def seq_len_list(self) -> tuple[int, ...]:
        return tuple(sorted({1, 8, *self.prefill_lens}))

    @property
    def vision_remap(self) -> tuple[int, ...]:
        return self.vm_die_remap or tuple(range(self.num_die))

    @property
    def language_remap(self) -> tuple[int, ...]:
        return self.lm_die_remap or tuple(range(self.num_die))


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """'540x960,720x1280' -> ((540, 960), (720, 1280)) (height x width)."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)x(\d+)", part)
        if not match:
            raise TyllmError(f"Image size {part!r} is not HEIGHTxWIDTH: write e.g. 540x960.")
        sizes.append((int(match[1]), int(match[2])))
    if not sizes:
        raise TyllmError("--image_sizes is empty: give e.g. 540x960,720x1280.")
    return tuple(sizes)


def check_remap(name: str, remap: tuple[int, ...], num_die: int, full: bool) -> None:
    if len(set(remap)) != len(remap) or any(not 0 <= d < num_die for d in remap):
        raise TyllmError(f"--{name} {list(remap)} must list distinct dies in 0..{num_die - 1} "
                         f"(num_die={num_die}).")
    if full and len(remap) != num_die:
        raise TyllmError(f"--{name} {list(remap)} must place all {num_die} language programs: "
                         f"give a permutation of 0..{num_die - 1}.")
    if not remap:
        raise TyllmError(f"--{name} is empty: give at least one die.")


def validate(request: VlmCompileRequest) -> None:
    if not isinstance(request.num_die, int) or request.num_die < 1:
        raise TyllmError(f"num_die={request.num_die} is invalid: use 1 or more dies.")
    check_remap("vm_die_remap", request.vision_remap, request.num_die, full=False)
    check_remap("lm_die_remap", request.language_remap, request.num_die, full=True)
    bad = [m for m in request.modalities if m not in MODALITIES]
    if bad or not request.modalities:
        raise TyllmError(f"modality {bad or '(none)'} is not supported: choose from {MODALITIES}.")
    if any(h < 1 or w < 1 for h, w in request.image_sizes):
        raise TyllmError(f"image sizes {request.image_sizes} must be positive HEIGHTxWIDTH.")
    if any(m < 1 for m in request.prefill_lens):
        raise TyllmError(f"prefill_lens {list(request.prefill_lens)} must be positive.")
    if max(request.seq_len_list) > request.max_model_len:
        raise TyllmError(f"prefill length {max(request.seq_len_list)} exceeds max_model_len="
                         f"{request.max_model_len}: raise max_model_len or shorten prefill_lens.")
    validate_shared(request, request.max_model_len, request.num_die, "num_die")
    if request.source_tokenizer is not None and not request.source_tokenizer.is_file():
        raise TyllmError(f"--source_tokenizer {request.source_tokenizer} is not a file: pass a "
                         f"tokenizer.json.")
