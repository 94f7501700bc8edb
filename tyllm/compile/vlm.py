"""The VLM compile recipe: language model (batch_1/), mrope/, rope index, visual/, documents.

`compile_vlm(request)` finishes the tree like the LLM compile (`compiler.compile_into`): staging
folder, compile log, manifest last, so an interrupted compile never leaves a tree that looks
complete.
"""

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from tyllm.artifacts import layout as llm_layout
from tyllm.artifacts import vlm_layout as layout
from tyllm.artifacts.documents import eos_token_ids
from tyllm.artifacts.params import save_params
from tyllm.backends import library_suffix
from tyllm.checkpoint import TensorReader, load_config, tokenizer_file
from tyllm.compile import program_cache
from tyllm.compile.budget import Budget, check_disk, estimate, with_static_graphs
from tyllm.compile.core import compile_module
from tyllm.compile.jobs import Pool
from tyllm.compile.llm import (
    compile_into,
    copy_tokenizer,
    save_embedding,
    step_config,
    write_documents,
    write_report,
)
from tyllm.compile.module_programs import ModuleGraph, compile_modules
from tyllm.compile.programs import StepRecipe, compile_steps
from tyllm.compile.report import CompileReport
from tyllm.compile.vision import check_vision_dies, write_visual
from tyllm.compile.vlm_request import VlmCompileRequest, validate
from tyllm.errors import TyllmError
from tyllm.models.decoder import causal_mask
from tyllm.models.registry import supported_architectures
from tyllm.models.vlm.language import (
    TEXT_PREFIXES,
    build_language_step,
    checkpoint_prefix,
    language_inputs,
)
from tyllm.models.vlm.mrope import MropeStep
from tyllm.models.vlm.processor import image_processor, patch_grid
from tyllm.models.vlm.rope_index import RopeIndexStep
from tyllm.models.vlm.spec import supported_vlms, vlm_for_config
from tyllm.quant.int4 import read_int4_scheme, shard_unit
from tyllm.shard.plan import plan_dies


class VlmCheckpoint:
    def __init__(self, path: Path, source_tokenizer: Path | None):
        self.path = path
        self.config = load_config(path)
        self.spec = vlm_for_config(self.config)
        if self.spec is None:
            names = getattr(self.config, "architectures", None)
            raise TyllmError(f"{path} holds {names}, not a vision-language model: compile_vlm "
                             f"takes {supported_vlms()}. Compile text models "
                             f"({supported_architectures()}) with `tyllm compile`.")
        self.dims = self.spec.text_dims(self.config)
        self.int4 = read_int4_scheme(self.config)  # the language model's; vision stays float
        self.tokenizer = source_tokenizer or tokenizer_file(path)
        self.eos = eos_token_ids(path, self.config.text_config)
        self.reader = TensorReader(path)
        # where the decoder lives in this checkpoint
        self.text_prefix = checkpoint_prefix(self.reader, TEXT_PREFIXES, "norm.weight")


def max_vision_runs(request: VlmCompileRequest, grids: dict, merge: int) -> int:
    """Runs of vision tokens the rope-index graph accepts: as many as max_model_len holds."""
    smallest = min(h * w for h, w in grids.values()) // merge**2
    return max(1, request.max_model_len // max(1, smallest))


def save_language_params(root: Path, plan, m: int, step) -> None:
    """A language graph's one constant: the causal mask of M rows (cos/sin are inputs)."""
    graph_params = llm_layout.graph_params_file(plan.die, m)
    save_params(llm_layout.ensure_parent(root, graph_params), {"causal_mask": causal_mask(m)})


LANGUAGE_STEP = StepRecipe(language_inputs, save_language_params, rope_tables=False)


def language_fingerprint(ckpt, plan, shape: tuple[int, int], window: int, request,
                         target) -> str:
    """Everything a language program of (batch, seq_len) depends on, for the program cache."""
    return program_cache.fingerprint(ckpt.config.to_dict(), {
        "graph": "vlm-language", "program_key": plan.program_key(ckpt.dims.group_size),
        "batch": shape[0], "seq_len": shape[1], "window": window,
        "max_kv": request.max_model_len, "dtype": request.dtype,
        "int4": ckpt.int4.as_json() if ckpt.int4 else None, "target": target.as_json()})


@dataclass(frozen=True)
class LanguageSteps:
    """Builds a language die's step module from the checkpoint at `path` (picklable: compile
    workers open the checkpoint themselves)."""

    path: Path
    request: VlmCompileRequest
    panels: int | None

    def num_layers(self) -> int:
        return VlmCheckpoint(self.path, self.request.source_tokenizer).dims.num_layers

    def __call__(self, plan):
        ckpt, request = VlmCheckpoint(self.path, self.request.source_tokenizer), self.request
        return build_language_step(ckpt.spec, ckpt.config, plan, ckpt.reader, ckpt.text_prefix,
                                   max_kv=request.max_model_len, dtype=request.torch_dtype,
                                   int4=ckpt.int4, panels=self.panels)


def compile_language(ckpt, plans, request, root: Path, target, report,
                     pool: Pool) -> list[dict]:
    """Every language die's graphs, one per (M, KV window): each distinct program compiled
    once (dies with the same program key share it), or taken from the program cache."""
    steps = LanguageSteps(request.model_path, request, target.weight_panels)
    return compile_steps(plans, steps, partial(language_fingerprint, ckpt, request=request,
                                               target=target),
                         request, root, target, report, LANGUAGE_STEP, pool)


@dataclass(frozen=True)
class MropeJob:
    """Compiles the mrope program of M positions (a compile job: tyllm/compile/jobs.py)."""

    path: Path
    m: int
    dtype: torch.dtype
    library: str

    def __call__(self, root: Path, target, report) -> dict:
        step, timings = mrope_step(load_config(self.path), self.m, self.dtype), {}
        positions = {"position_ids": torch.zeros(3, self.m, dtype=torch.int64)}
        entry = compile_module(step, positions, ("rope_cos", "rope_sin"), root, self.library,
                               target, timings, report)
        return {"io": entry, "timings": timings}


def mrope_step(config, m: int, dtype) -> MropeStep:
    spec = vlm_for_config(config)
    return MropeStep(spec.hf_class(spec.rotary_class)(config=config.text_config), m, dtype)


def compile_mrope(ckpt, plans, request, root: Path, target, report, pool: Pool) -> list[dict]:
    """3-axis positions -> cos/sin, per language die and M: the same program on every die."""
    graphs = []
    for plan in plans:
        for m in request.seq_len_list:
            params = layout.mrope_params(plan.die, m)
            save_params(llm_layout.ensure_parent(root, params),
                        dict(mrope_step(ckpt.config, m, request.torch_dtype).named_parameters()))
            library = layout.mrope_library(plan.die, m, library_suffix(request.backend))
            program = program_cache.fingerprint(ckpt.config.to_dict(), {
                "graph": "mrope", "seq_len": m, "dtype": request.dtype,
                "target": target.as_json()})
            graphs.append(ModuleGraph(plan.die, m, "mrope", program,
                                      MropeJob(ckpt.path, m, request.torch_dtype, library),
                                      library))
    entries = compile_modules(graphs, "mrope", request, root, target, report, 0, pool)
    return [{**entry, "die": g.die, "seq_len": g.rows, "params": layout.mrope_params(g.die,
                                                                                    g.rows)}
            for g, entry in zip(graphs, entries, strict=True)]


@dataclass(frozen=True)
class RopeIndexJob:
    """Compiles the rope-index program over `length` positions and `runs` vision runs (a
    compile job: tyllm/compile/jobs.py)."""

    length: int
    runs: int
    library: str

    def __call__(self, root: Path, target, report) -> dict:
        timings = {}
        inputs = {"token_type": torch.zeros(self.length, dtype=torch.int64),
                  "grids": torch.zeros(self.runs, 3, dtype=torch.int64),
                  "intervals": torch.zeros(self.runs, dtype=torch.float32),
                  "length": torch.zeros(1, dtype=torch.int64)}
        entry = compile_module(RopeIndexStep(self.length, self.runs), inputs,
                               ("position_ids", "rope_delta"), root, self.library, target,
                               timings, report)
        return {"io": entry, "timings": timings}


def compile_rope_index(request, runs: int, root: Path, target, report, pool: Pool) -> dict:
    """Token types + vision grids -> 3-axis positions: one program, kept in the program cache
    like every other (it depends on the lengths and the target only)."""
    length = request.max_model_len
    save_params(root / layout.ROPE_INDEX_PARAMS,
                {"max_length": torch.tensor([length]), "max_runs": torch.tensor([runs])})
    library = layout.rope_index_library(library_suffix(request.backend))
    program = program_cache.fingerprint({}, {"graph": "rope-index", "length": length,
                                             "runs": runs, "target": target.as_json()})
    graph = ModuleGraph(0, length, "rope index", program, RopeIndexJob(length, runs, library),
                        library)
    [entry] = compile_modules([graph], "rope index", request, root, target, report, 0, pool)
    return {"params": layout.ROPE_INDEX_PARAMS, "max_length": length, "max_runs": runs, **entry}


def token_ids(config) -> dict:
    return {name: int(getattr(config, name)) for name in
            ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}


def tree_config(ckpt, request, plans, vision: dict, target) -> dict:
    """step_config (tyllm/compile/llm.py) plus the vision side: remaps, modalities, tokens."""
    return step_config(ckpt, request, plans, target, kind="vlm", architecture=ckpt.spec.name,
                       max_kv=request.max_model_len, embedding_as_input=True) | {
        "language_die_remap": list(request.language_remap),
        "modalities": list(request.modalities), "vision": vision,
        "tokens": token_ids(ckpt.config),
        "tokens_per_second": getattr(ckpt.config.vision_config, "tokens_per_second", None),
        "video_frames_as_images": ckpt.spec.video_frames_as_images,
    }


def write_vlm_tree(ckpt, request, root: Path, report) -> None:
    # Step 1. Plans, target, the patch grid of every compiled image size.
    plans = plan_dies(ckpt.dims, request.num_die, shard_unit(ckpt.int4))
    target = request.target()
    processor = image_processor(ckpt.path, ckpt.config.vision_config)
    grids = {size: patch_grid(processor, size) for size in request.image_sizes}
    # Step 2. Every graph: vision, language, mrope, rope index, on one pool of processes.
    runs = max_vision_runs(request, grids, ckpt.config.vision_config.spatial_merge_size)
    with Pool(request.jobs) as pool:
        vision = write_visual(ckpt, grids, request, root, target, report, pool)
        graphs = compile_language(ckpt, plans, request, root, target, report, pool)
        mrope = compile_mrope(ckpt, plans, request, root, target, report, pool)
        rope_index = compile_rope_index(request, runs, root, target, report, pool)
    # Step 3. Documents, tokenizer, processor config, embedding table.
    write_documents(root, tree_config(ckpt, request, plans, vision, target), graphs,
                    mrope=mrope, rope_index=rope_index)
    copy_tokenizer(ckpt, root, extras=(layout.PREPROCESSOR,))
    if not (root / layout.PREPROCESSOR).is_file():
        processor.save_pretrained(root)
    save_embedding(ckpt, root, request.torch_dtype, f"{ckpt.text_prefix}embed_tokens.weight")
    write_report(root, report, request.num_die)


def vlm_budget(ckpt, plans, request) -> Budget:
    """The language model's step graphs (budget.estimate) plus the vision tower's weights and
    the vision, mrope and rope-index graphs."""
    steps = estimate(ckpt.dims, plans, request, ckpt.int4, max_kv=request.max_model_len,
                     embedding_as_input=True)
    with torch.device("meta"):
        tower = ckpt.spec.hf_class(ckpt.spec.vision_class)._from_config(
            ckpt.config.vision_config)
    itemsize = torch.empty(0, dtype=request.torch_dtype).element_size()
    sizes, lens = len(request.image_sizes), len(request.seq_len_list)
    return with_static_graphs(
        steps, len(request.vision_remap) * sizes + request.num_die * lens + 1,
        sizes + lens + 1, sum(p.numel() for p in tower.parameters()) * itemsize)


def compile_vlm(request: VlmCompileRequest) -> Path:
    validate(request)
    ckpt = VlmCheckpoint(request.model_path, request.source_tokenizer)
    plans = plan_dies(ckpt.dims, request.num_die, shard_unit(ckpt.int4))
    check_vision_dies(ckpt.config, len(request.vision_remap))
    budget = vlm_budget(ckpt, plans, request)
    check_disk(budget, request.artifacts_path)
    report = CompileReport(budget.graphs, request.progress, request.verbose)
    report.say(budget.line())
    return compile_into(request.artifacts_path, report,
                        lambda root: write_vlm_tree(ckpt, request, root, report))
