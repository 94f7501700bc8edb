"""What a compile will need, printed before the work: graphs to compile (and how many of their
programs the program cache holds already), disk for the tree, peak memory; a compile whose tree
the disk cannot hold is refused before it starts."""

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tyllm.compile.jobs import worker_count
from tyllm.compile.request import Request
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
    cached: int = 0  # step libraries the program cache holds already
    static_programs: int = 0  # a VLM's vision, mrope and rope-index programs (one library each)
    static_cached: int = 0  # of which the program cache holds

    def line(self) -> str:
        processes = f" in {self.processes} processes" if self.processes > 1 else ""
        return (f"plan: {self.graphs} graphs ({self.steps_phrase()}{self.static_phrase()}"
                f"{processes}), tree about {self.disk_bytes / GB:.2f} GB on disk, peak memory "
                f"about {self.peak_memory_bytes / GB:.1f} GB")

    def steps_phrase(self) -> str:
        libraries = self.programs * self.windows
        lowered = (f", {self.windows} KV windows each: {libraries} libraries"
                   if self.windows > 1 else "")
        if not self.cached:
            return f"{self.programs} distinct programs to compile{lowered}"
        return (f"{self.programs} distinct programs{lowered}; {self.cached} in the program "
                f"cache, {libraries - self.cached} to compile")

    def static_phrase(self) -> str:
        if not self.static_programs:
            return ""
        cached = (f" ({self.static_cached} in the program cache)" if self.static_cached
                  else "")
        return f", and {self.static_programs} vision/mrope programs{cached}"


def die_weight_bytes(dims, plan, request: Request, int4, tied: bool) -> int:
    """Exact bytes of a die's weights, from its step module built without memory."""
    with torch.device("meta"):
        step = DecoderStep(dims, plan, seq_len=1, max_kv=request.max_kv,
                           embedding_as_input=request.embedding_as_input,
                           dtype=request.torch_dtype, int4=int4)
    weights = die_weights(step)
    if (step.embed_tokens is not None and tied
            and weights["lm_head"].shape == weights["embed_tokens"].shape):
        weights.pop("lm_head")  # a tied table the die holds whole is stored once
    return sum(p.numel() * p.element_size() for p in weights.values())


def estimate(ckpt, plans, request: Request, schedule) -> Budget:
    """The step graphs' budget (an LLM tree, a VLM's language model); `schedule`
    (programs.Schedule) says which of their programs the cache holds and which compile."""
    dims = ckpt.dims
    weights = [die_weight_bytes(dims, p, request, ckpt.int4, ckpt.tied) for p in plans]
    itemsize = torch.empty(0, dtype=request.torch_dtype).element_size()
    rope = 2 * request.max_kv * dims.head_dim * itemsize  # per graph: cos and sin
    windows = len(request.windows)
    programs = len({p.program_key(dims.group_size) for p in plans}) * len(request.graph_shapes)
    embedding = (dims.vocab_size * dims.hidden_size * itemsize if request.embedding_as_input
                 else 0)
    disk = (sum(weights) + len(plans) * len(request.step_lengths) * rope
            + programs * windows * LIBRARY_BYTES + embedding)
    # Each compiling process holds one die's weights at a time, about twice while they are
    # read into the step module and saved.
    jobs = len(schedule.owned)
    processes = max(1, min(worker_count(request.jobs, jobs * dims.num_layers), jobs))
    return Budget(len(plans) * len(request.graph_shapes), programs, windows, disk,
                  processes * (IMPORTS_BYTES + 2 * max(weights)), processes,
                  len(schedule.cached))


def check_disk(budget: Budget, dest: Path) -> None:
    """The tree is written beside `dest` before it replaces it: all of it must fit."""
    folder = next(p for p in dest.parents if p.exists())  # the staging folder's disk
    free = shutil.disk_usage(folder).free
    if free < budget.disk_bytes * 1.05:
        raise TyllmError(f"The tree needs about {budget.disk_bytes / GB:.2f} GB but only "
                         f"{free / GB:.2f} GB are free under {folder}: free some space or "
                         f"choose an artifacts_path on another disk.")


def with_static_graphs(steps: Budget, kinds: list, cached: int, weight_bytes: int) -> Budget:
    """`steps` plus static graphs (`kinds`, programs.Programs: a VLM's vision, mrope and
    rope-index graphs, `cached` of their programs in the program cache): a library per program
    and `weight_bytes` more on disk, held once more while compiling."""
    programs = sum(k.distinct for k in kinds)
    return replace(steps, graphs=steps.graphs + sum(len(k.graphs) for k in kinds),
                   static_programs=programs, static_cached=cached,
                   disk_bytes=steps.disk_bytes + weight_bytes + programs * LIBRARY_BYTES,
                   peak_memory_bytes=steps.peak_memory_bytes + weight_bytes)
