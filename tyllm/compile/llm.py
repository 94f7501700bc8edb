"""The compile recipe: checkpoint -> per-die, per-seq_len TVM libraries in the artifact tree."""

import json
import re
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from tyllm.artifacts import layout
from tyllm.artifacts.documents import FORMAT_VERSION, eos_token_ids, plan_json, write_json
from tyllm.artifacts.manifest import TREE_FORMAT, write_manifest, written_by_tyllm
from tyllm.artifacts.params import save_params
from tyllm.artifacts.staging import check_not_a_file, write_atomically
from tyllm.backends import Target
from tyllm.capture.export import step_inputs
from tyllm.checkpoint import TensorReader, load_config, tokenizer_file
from tyllm.compile import program_cache
from tyllm.compile.budget import check_disk, estimate
from tyllm.compile.jobs import Pool
from tyllm.compile.programs import StepRecipe, compile_steps
from tyllm.compile.report import CompileReport
from tyllm.compile.request import CompileRequest, validate
from tyllm.errors import TyllmError
from tyllm.models.decoder import causal_mask
from tyllm.models.loading import SHARED_CONSTANTS, build_die_step
from tyllm.models.registry import arch_for_config
from tyllm.quant.int4 import read_int4_scheme, shard_unit
from tyllm.shard.plan import DiePlan, plan_dies


@dataclass(frozen=True)
class LlmSteps:
    """Builds a die's step module, its weights read from the checkpoint at `path` (picklable:
    compile workers open the checkpoint themselves)."""

    path: Path
    request: CompileRequest
    panels: int | None

    def num_layers(self) -> int:
        return Checkpoint(self.path).dims.num_layers

    def __call__(self, plan: DiePlan):
        ckpt, request = Checkpoint(self.path), self.request
        return build_die_step(ckpt.arch, ckpt.config, plan, ckpt.reader,
                              max_kv=request.max_kv_cache_size,
                              embedding_as_input=request.embedding_as_input,
                              dtype=request.torch_dtype, int4=ckpt.int4, panels=self.panels)


class Checkpoint:
    """The parts of a HF folder the compiler reads."""

    def __init__(self, path: Path):
        self.path = path
        self.config = load_config(path)
        self.arch = arch_for_config(self.config)
        self.dims = self.arch.dims_from_config(self.config)
        self.int4 = read_int4_scheme(self.config)
        self.tokenizer = tokenizer_file(path)
        self.eos = eos_token_ids(path, self.config)  # read now: a bad file fails before any work
        self.reader = TensorReader(path)


def save_graph_params(root: Path, plan: DiePlan, seq_len: int, step) -> None:
    """The graph's constants: the die's rope tables and the causal mask of `seq_len` rows."""
    params = dict(step.named_parameters())
    save_params(layout.ensure_parent(root, layout.constants_file(plan.die, seq_len)),
                {n: params[n] for n in SHARED_CONSTANTS})
    save_params(layout.ensure_parent(root, layout.graph_params_file(plan.die, seq_len)),
                {"causal_mask": causal_mask(seq_len)})


LLM_STEP = StepRecipe(step_inputs, save_graph_params, rope_tables=True)


def program_fingerprint(ckpt, plan: DiePlan, shape: tuple[int, int], window: int, request,
                        target: Target) -> str:
    """Everything the program of (die `plan`'s shapes, (batch, seq_len), KV window) depends
    on, for the program cache."""
    key = plan.program_key(ckpt.dims.group_size)
    return program_cache.fingerprint(ckpt.config.to_dict(), {
        "graph": "llm-step", "program_key": key, "batch": shape[0], "seq_len": shape[1],
        "window": window,
        "max_kv": request.max_kv_cache_size, "dtype": request.dtype,
        "embedding_as_input": request.embedding_as_input,
        "int4": ckpt.int4.as_json() if ckpt.int4 else None, "target": target.as_json()})


def step_config(ckpt, request, plans, target: Target, *, kind: str, architecture: str,
                max_kv: int, embedding_as_input: bool) -> dict:
    """The config.json keys LLM and VLM trees share: the language model's step graphs."""
    dims = ckpt.dims
    return {
        "format_version": FORMAT_VERSION, "kind": kind, "architecture": architecture,
        "model_type": getattr(ckpt.config, "model_type", architecture), "dies": len(plans),
        "seq_len_list": sorted(request.seq_len_list), "batch_sizes": request.batches,
        "max_kv_cache_size": max_kv, "kv_windows": list(request.windows),
        "dtype": request.dtype, "embedding_as_input": embedding_as_input,
        "vocab_size": dims.vocab_size, "hidden_size": dims.hidden_size,
        "num_layers": dims.num_layers, "eos_token_ids": ckpt.eos,
        "die_plans": [plan_json(p) for p in plans],
        "backend": request.backend, "target": target.as_json(),
        "hf_config": ckpt.config.to_dict(),
        "quantization": ckpt.int4.as_json() if ckpt.int4 else None,
    }


def tree_config(ckpt: Checkpoint, request: CompileRequest, plans, target: Target) -> dict:
    return step_config(ckpt, request, plans, target, kind="llm", architecture=ckpt.arch.name,
                       max_kv=request.max_kv_cache_size,
                       embedding_as_input=request.embedding_as_input)


def kv_cache_entries(graphs: list[dict]) -> list[dict]:
    first = {}
    for g in graphs:
        first.setdefault(g["die"], g)
    return [{"die": d, **{t["name"]: {"shape": t["shape"], "dtype": t["dtype"]}
                          for t in g["inputs"] if t["name"] in ("k_cache", "v_cache")}}
            for d, g in sorted(first.items())]


def copy_tokenizer(ckpt, root: Path, extras: tuple[str, ...] = ()) -> None:
    """tokenizer.json (ckpt.tokenizer) plus the tokenizer/generation files the folder has."""
    shutil.copyfile(ckpt.tokenizer, root / layout.TOKENIZER)
    for name in (*layout.TOKENIZER_EXTRAS, *extras):
        if (ckpt.path / name).is_file():
            shutil.copyfile(ckpt.path / name, root / name)


def save_embedding(ckpt, root: Path, dtype: torch.dtype,
                   name: str = "model.embed_tokens.weight") -> None:
    table = ckpt.reader.read(name).to(dtype)
    save_params(root / layout.EMBEDDING, {"embed_tokens": table})


def sizes_per_die(root: Path, dies: int) -> dict[int, int]:
    sizes = dict.fromkeys(range(dies), 0)
    for path in root.rglob("*"):
        match = re.search(r"die(\d+)(?!\d)", path.name)
        if match and path.is_file():
            sizes[int(match[1])] += path.stat().st_size
    return sizes


def build_tree(ckpt: Checkpoint, request: CompileRequest, root: Path, report) -> None:
    # Step 1. Plan the dies and pick the target.
    plans = plan_dies(ckpt.dims, request.dev_count, shard_unit(ckpt.int4))
    target = request.target()
    # Step 2. Every die's weights, then each distinct (batch, seq_len) program compiled once.
    steps = LlmSteps(request.model_path, request, target.weight_panels)
    with Pool(request.jobs) as pool:
        graphs = compile_steps(plans, steps, partial(program_fingerprint, ckpt, request=request,
                                                     target=target),
                               request, root, target, report, LLM_STEP, pool)
    # Step 3. Documents, tokenizer, embedding table, report.
    write_documents(root, tree_config(ckpt, request, plans, target), graphs)
    copy_tokenizer(ckpt, root)
    if request.embedding_as_input:
        save_embedding(ckpt, root, request.torch_dtype)
    write_report(root, report, request.dev_count)


def write_documents(root: Path, config: dict, graphs: list[dict], **buffers) -> None:
    """config.json, buffer_config.json (the step graphs, their KV buffers and `buffers`, e.g. a
    VLM's mrope graphs) and empty.bin: what every tree (LLM, VLM) writes the same way."""
    write_json(root / layout.CONFIG, config)
    write_json(root / layout.BUFFER_CONFIG, {"format_version": FORMAT_VERSION, "graphs": graphs,
                                             "kv_cache": kv_cache_entries(graphs), **buffers})
    (root / layout.EMPTY).write_bytes(b"")


def write_report(root: Path, report, dies: int) -> None:
    """compile_report.json, once every other file is written (it counts their bytes)."""
    write_json(root / layout.REPORT, report.summary(sizes_per_die(root, dies)))


def final_line(tree: Path) -> str:
    summary = json.loads((tree / layout.REPORT).read_text())
    graphs = len(summary["graphs"])
    libraries = sum(len(g.get("windows") or [None]) for g in summary["graphs"])
    windows = f" ({libraries} KV-window libraries)" if libraries > graphs else ""
    processes = len({w["worker"] for w in summary.get("workers", [])})
    on = f" on {processes} processes" if processes > 1 else ""
    return (f"compiled {graphs} graphs{windows} into {tree} in "
            f"{summary['compile_seconds']} s{on}, peak RSS {summary['peak_rss_mb']} MB; "
            f"log: {tree / layout.COMPILE_LOG}")


def check_tree_destination(dest: Path) -> None:
    """Only a new or empty folder, or a tree tyllm wrote (its manifest tagged and listing exactly
    the files present), may be replaced."""
    if dest.is_dir() and any(dest.iterdir()) and not written_by_tyllm(dest, TREE_FORMAT):
        raise TyllmError(f"{dest} exists, is not empty and is not a tyllm artifact tree (no "
                         f"tyllm manifest listing exactly its files; a tree written by an older "
                         f"tyllm has none either): choose another artifacts_path or empty it "
                         f"yourself; tyllm will not overwrite it.")


def compile_llm(request: CompileRequest) -> Path:
    """Compiles into a staging folder beside the destination, then moves it into place."""
    validate(request)
    check_not_a_file(request.artifacts_path)
    check_tree_destination(request.artifacts_path)
    ckpt = Checkpoint(request.model_path)
    # Refuse impossible die counts (and int4 groups split across dies) before any work.
    plans = plan_dies(ckpt.dims, request.dev_count, shard_unit(ckpt.int4))
    budget = estimate(ckpt.dims, plans, request, ckpt.int4,
                      bool(getattr(ckpt.config, "tie_word_embeddings", False)))
    check_disk(budget, request.artifacts_path)
    report = CompileReport(len(request.graph_shapes) * request.dev_count, request.progress,
                           request.verbose)
    report.say(budget.line())
    return compile_into(request.artifacts_path, report,
                        lambda root: build_tree(ckpt, request, root, report))


def compile_into(dest: Path, report: CompileReport, build) -> Path:
    """The finishing every tree shares: `build(staging)` writes the tree's files with framework
    output going to its compile log, the manifest goes last (a tree without one is never taken
    as complete), and the staging folder replaces `dest`."""
    def write(staging: Path) -> None:
        with report.capture(staging / layout.COMPILE_LOG):
            build(staging)
        write_manifest(staging)

    tree = write_atomically(dest, write, check_tree_destination)
    report.say(final_line(tree))
    return tree
