"""What a compile will need, printed before the work: graphs to compile, disk for the tree, peak
memory; a compile whose tree the disk cannot hold is refused before it starts."""

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tyllm.compile.jobs import worker_count
from tyllm.errors import TyllmError
from tyllm.models.decoder import DecoderStep
from tyllm.models.loading import die_weights

LIBRARY_BYTES = 4 << 20  # a compiled graph and its ONNX twin, generously (SmolLM2: ~1.4 MB)
IMPORTS_BYTES = 700 << 20  # torch, TVM, onnx and transformers loaded: the floor of any compile
GB = 1e9


@dataclass(frozen=True)
class Budget:
    graphs: int  # (die, M) steps: what the progress bar counts
    programs: int  # distinct (program key, M) steps, each captured once
    windows: int  # KV windows: each program is lowered once per window
    disk_bytes: int
    peak_memory_bytes: int  # all compiling processes together
    processes: int = 1
    static_programs: int = 0  # a VLM's vision and mrope programs (one library each)

    def line(self) -> str:
        lowered = (f", {self.windows} KV windows each: {self.programs * self.windows} "
                   f"libraries" if self.windows > 1 else "")
        processes = f" in {self.processes} processes" if self.processes > 1 else ""
        static = (f", and {self.static_programs} vision/mrope programs"
                  if self.static_programs else "")
        return (f"plan: {self.graphs} graphs ({self.programs} distinct programs to "
                f"compile{lowered}{static}{processes}), tree about "
                f"{self.disk_bytes / GB:.2f} GB on disk, peak memory about "
                f"{self.peak_memory_bytes / GB:.1f} GB")


def die_weight_bytes(dims, plan, request, int4, tied: bool, max_kv: int | None = None,
                     embedding_as_input: bool | None = None) -> int:
    """Exact bytes of a die's weights, from its step module built without memory (`max_kv`
    and `embedding_as_input` default to the LLM request's)."""
    max_kv = request.max_kv_cache_size if max_kv is None else max_kv
    if embedding_as_input is None:
        embedding_as_input = request.embedding_as_input
    with torch.device("meta"):
        step = DecoderStep(dims, plan, seq_len=1, max_kv=max_kv,
                           embedding_as_input=embedding_as_input, dtype=request.torch_dtype,
                           int4=int4)
    weights = die_weights(step)
    if (step.embed_tokens is not None and tied
            and weights["lm_head"].shape == weights["embed_tokens"].shape):
        weights.pop("lm_head")  # a tied table the die holds whole is stored once
    return sum(p.numel() * p.element_size() for p in weights.values())


def estimate(dims, plans, request, int4, tied: bool = False, *, max_kv: int | None = None,
             embedding_as_input: bool | None = None) -> Budget:
    """The step graphs' budget (an LLM tree; a VLM's language model with `max_kv` and
    `embedding_as_input` given, as its request names them differently)."""
    max_kv = request.max_kv_cache_size if max_kv is None else max_kv
    embedded = request.embedding_as_input if embedding_as_input is None else embedding_as_input
    weights = [die_weight_bytes(dims, p, request, int4, tied, max_kv, embedded) for p in plans]
    lens, shapes = request.seq_len_list, request.graph_shapes
    itemsize = torch.empty(0, dtype=request.torch_dtype).element_size()
    rope = 2 * max_kv * dims.head_dim * itemsize  # per graph: cos and sin
    windows = len(request.windows)
    programs = len({p.program_key(dims.group_size) for p in plans}) * len(shapes)
    embedding = dims.vocab_size * dims.hidden_size * itemsize if embedded else 0
    disk = (sum(weights) + len(plans) * len(lens) * rope
            + programs * windows * LIBRARY_BYTES + embedding)
    # Each compiling process holds one die's weights at a time, about twice while they are
    # read into the step module and saved.
    processes = min(worker_count(request.jobs, programs * dims.num_layers), programs)
    return Budget(len(plans) * len(shapes), programs, windows, disk,
                  processes * (IMPORTS_BYTES + 2 * max(weights)), processes)


def check_disk(budget: Budget, dest: Path) -> None:
    """The tree is written beside `dest` before it replaces it: all of it must fit."""
    folder = next(p for p in dest.parents if p.exists())  # the staging folder's disk
    free = shutil.disk_usage(folder).free
    if free < budget.disk_bytes * 1.05:
        raise TyllmError(f"The tree needs about {budget.disk_bytes / GB:.2f} GB but only "
                         f"{free / GB:.2f} GB are free under {folder}: free some space or "
                         f"choose an artifacts_path on another disk.")


def with_static_graphs(steps: Budget, graphs: int, programs: int, weight_bytes: int) -> Budget:
    """`steps` plus static graphs (a VLM's vision and mrope graphs): `programs` more libraries
    and `weight_bytes` more on disk, held once more while compiling."""
    return replace(steps, graphs=steps.graphs + graphs, static_programs=programs,
                   disk_bytes=steps.disk_bytes + weight_bytes + programs * LIBRARY_BYTES,
                   peak_memory_bytes=steps.peak_memory_bytes + weight_bytes)
