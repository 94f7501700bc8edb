"""What a compile will need, printed before the work: graphs to compile, disk for the tree, peak
memory; a compile whose tree the disk cannot hold is refused before it starts."""

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from tyllm.compile_jobs import worker_count
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

    def line(self) -> str:
        lowered = (f", {self.windows} KV windows each: {self.programs * self.windows} "
                   f"libraries" if self.windows > 1 else "")
        processes = f" in {self.processes} processes" if self.processes > 1 else ""
        return (f"plan: {self.graphs} graphs ({self.programs} distinct programs to "
                f"compile{lowered}{processes}), tree about {self.disk_bytes / GB:.2f} GB on "
                f"disk, peak memory about {self.peak_memory_bytes / GB:.1f} GB")


def die_weight_bytes(dims, plan, request, int4, tied: bool) -> int:
    """Exact bytes of a die's weights, from its step module built without memory."""
    with torch.device("meta"):
        step = DecoderStep(dims, plan, seq_len=1, max_kv=request.max_kv_cache_size,
                           embedding_as_input=request.embedding_as_input,
                           dtype=request.torch_dtype, int4=int4)
    weights = die_weights(step)
    if (step.embed_tokens is not None and tied
            and weights["lm_head"].shape == weights["embed_tokens"].shape):
        weights.pop("lm_head")  # a tied table the die holds whole is stored once
    return sum(p.numel() * p.element_size() for p in weights.values())


def estimate(dims, plans, request, int4, tied: bool = False) -> Budget:
    weights = [die_weight_bytes(dims, p, request, int4, tied) for p in plans]
    lens, shapes = request.seq_len_list, request.graph_shapes
    itemsize = torch.empty(0, dtype=request.torch_dtype).element_size()
    rope = 2 * request.max_kv_cache_size * dims.head_dim * itemsize  # per graph: cos and sin
    windows = len(request.windows)
    programs = len({p.program_key(dims.group_size) for p in plans}) * len(shapes)
    embedding = dims.vocab_size * dims.hidden_size * itemsize if request.embedding_as_input else 0
    disk = (sum(weights) + len(plans) * len(lens) * rope
            + programs * windows * LIBRARY_BYTES + embedding)
    # Each compiling process holds one die's weights at a time, about twice while they are
    # read into the step module and saved.
    processes = min(worker_count(request.jobs), programs)
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
