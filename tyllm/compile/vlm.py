"""The VLM compile recipe: language model (batch_1/), mrope/, rope index, visual/, documents.

`compile_vlm(request)` finishes the tree like the LLM compile (`tree.compile_into`): staging
folder, compile log, manifest last, so an interrupted compile never leaves a tree that looks
complete.
"""

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from tyllm.artifacts import layout as llm_layout
from tyllm.artifacts import vlm_layout as layout
from tyllm.artifacts.params import save_params
from tyllm.backends import Target, library_suffix
from tyllm.checkpoint import load_config
from tyllm.compile import program_cache
from tyllm.compile.budget import Budget, check_disk, estimate, with_static_graphs
from tyllm.compile.core import STATIC, ProgramFiles, StaticJob
from tyllm.compile.programs import Graph, Programs, Schedule, compile_context, compile_programs
from tyllm.compile.report import CompileReport
from tyllm.compile.steps import StepCheckpoint, StepRecipe, compile_steps, step_programs
from tyllm.compile.tree import (
    compile_into,
    copy_tokenizer,
    save_embedding,
    step_config,
    write_documents,
    write_report,
)
from tyllm.compile.vision import check_vision_dies, vision_programs, write_visual
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
from tyllm.quant.int4 import shard_unit
from tyllm.shard.plan import DiePlan, plan_dies


def save_language_params(root: Path, plan: DiePlan, m: int, step) -> None:
    """A language graph's one constant: the causal mask of M rows (cos/sin are inputs)."""
    graph_params = llm_layout.graph_params_file(plan.die, m)
    save_params(llm_layout.ensure_parent(root, graph_params), {"causal_mask": causal_mask(m)})


def vlm_spec(path: Path, config):
    spec = vlm_for_config(config)
    if spec is None:
        names = getattr(config, "architectures", None)
        raise TyllmError(f"{path} holds {names}, not a vision-language model: compile_vlm "
                         f"takes {supported_vlms()}. Compile text models "
                         f"({supported_architectures()}) with `tyllm compile`.")
    return spec


class VlmCheckpoint(StepCheckpoint):
    """The parts of a VLM's HF folder the compiler reads; its language model's int4 scheme
    (the vision tower stays float)."""

    recipe = StepRecipe(language_inputs, save_language_params, rope_tables=False)
    kind = "vlm"

    def __init__(self, path: Path, source_tokenizer: Path | None = None):
        config = load_config(path)
        self.spec = vlm_spec(path, config)
        super().__init__(path, config, self.spec.text_dims(config), config.text_config,
                         source_tokenizer)
        # where the decoder lives in this checkpoint
        self.text_prefix = checkpoint_prefix(self.reader, TEXT_PREFIXES, "norm.weight")

    @classmethod
    def open(cls, request: VlmCompileRequest) -> "VlmCheckpoint":
        return cls(request.model_path, request.source_tokenizer)

    @property
    def architecture(self) -> str:
        return self.spec.name

    def facts(self, request: VlmCompileRequest) -> dict:
        return {"graph": "vlm-language"}

    def build_step(self, plan: DiePlan, request: VlmCompileRequest, panels: int | None):
        return build_language_step(self.spec, self.config, plan, self.reader, self.text_prefix,
                                   max_kv=request.max_kv, dtype=request.torch_dtype,
                                   int4=self.int4, panels=panels)


def max_vision_runs(request: VlmCompileRequest, grids: dict, merge: int) -> int:
    """Runs of vision tokens the rope-index graph accepts: as many as max_model_len holds."""
    smallest = min(h * w for h, w in grids.values()) // merge**2
    return max(1, request.max_model_len // max(1, smallest))


@dataclass(frozen=True)
class MropeJob(StaticJob):
    """Compiles the mrope program of M positions (a compile job: tyllm/compile/jobs.py)."""

    path: Path
    m: int
    dtype: torch.dtype
    files: ProgramFiles

    def build(self) -> tuple:
        positions = {"position_ids": torch.zeros(3, self.m, dtype=torch.int64)}
        return (mrope_step(load_config(self.path), self.m, self.dtype), positions,
                ("rope_cos", "rope_sin"))


def mrope_step(config, m: int, dtype) -> MropeStep:
    spec = vlm_for_config(config)
    return MropeStep(spec.hf_class(spec.rotary_class)(config=config.text_config), m, dtype)


def mrope_programs(ckpt: VlmCheckpoint, plans: list[DiePlan], request: VlmCompileRequest,
                   target: Target) -> Programs:
    """3-axis positions -> cos/sin, per language die and M: the same program on every die."""
    config, suffix = ckpt.config.to_dict(), library_suffix(request.backend)
    shared = {"graph": "mrope", "dtype": request.dtype, "target": target.as_json()}
    graphs = [Graph(plan.die, m, "mrope",
                    {STATIC: program_cache.fingerprint(config, shared | {"seq_len": m})},
                    ProgramFiles({STATIC: layout.mrope_library(plan.die, m, suffix)}),
                    partial(MropeJob, ckpt.path, m, request.torch_dtype),
                    {"die": plan.die, "seq_len": m, "params": layout.mrope_params(plan.die, m)})
              for plan in plans for m in request.step_lengths]
    return Programs("mrope", graphs, 0, partial(write_mrope, ckpt.config, plans, request))


def write_mrope(config, plans: list[DiePlan], request: VlmCompileRequest, root: Path) -> None:
    """Each mrope graph's constants (the rotary embedding's inverse frequencies)."""
    for plan in plans:
        for m in request.step_lengths:
            params = dict(mrope_step(config, m, request.torch_dtype).named_parameters())
            save_params(llm_layout.ensure_parent(root, layout.mrope_params(plan.die, m)), params)


@dataclass(frozen=True)
class RopeIndexJob(StaticJob):
    """Compiles the rope-index program over `length` positions and `runs` vision runs (a
    compile job: tyllm/compile/jobs.py)."""

    length: int
    runs: int
    files: ProgramFiles

    def build(self) -> tuple:
        inputs = {"token_type": torch.zeros(self.length, dtype=torch.int64),
                  "grids": torch.zeros(self.runs, 3, dtype=torch.int64),
                  "intervals": torch.zeros(self.runs, dtype=torch.float32),
                  "length": torch.zeros(1, dtype=torch.int64)}
        return RopeIndexStep(self.length, self.runs), inputs, ("position_ids", "rope_delta")


def rope_index_programs(request: VlmCompileRequest, runs: int, target: Target) -> Programs:
    """Token types + vision grids -> 3-axis positions: one program, kept in the program cache
    like every other (it depends on the lengths and the target only)."""
    length = request.max_model_len
    program = program_cache.fingerprint({}, {"graph": "rope-index", "length": length,
                                             "runs": runs, "target": target.as_json()})
    files = ProgramFiles({STATIC: layout.rope_index_library(library_suffix(request.backend))})
    entry = {"params": layout.ROPE_INDEX_PARAMS, "max_length": length, "max_runs": runs}
    graph = Graph(0, length, "rope index", {STATIC: program}, files,
                  partial(RopeIndexJob, length, runs), entry)
    return Programs("rope index", [graph], 0, partial(write_rope_index, length, runs))


def write_rope_index(length: int, runs: int, root: Path) -> None:
    save_params(root / layout.ROPE_INDEX_PARAMS,
                {"max_length": torch.tensor([length]), "max_runs": torch.tensor([runs])})


def token_ids(config) -> dict:
    return {name: int(getattr(config, name)) for name in
            ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}


def tree_config(ckpt: VlmCheckpoint, ctx, plans: list[DiePlan], vision: dict) -> dict:
    """step_config (tyllm/compile/tree.py) plus the vision side: remaps, modalities, tokens."""
    return step_config(ckpt, ctx, plans) | {
        "language_die_remap": list(ctx.request.language_remap),
        "modalities": list(ctx.request.modalities), "vision": vision,
        "tokens": token_ids(ckpt.config),
        "tokens_per_second": getattr(ckpt.config.vision_config, "tokens_per_second", None),
        "video_frames_as_images": ckpt.spec.video_frames_as_images,
    }


@dataclass(frozen=True)
class VlmTree:
    """What a VLM tree is compiled from, decided before any work: the checkpoint, the language
    dies' plans, the target, the image processor and the patch grid of each compiled size, and
    every graph (vision, language steps, mrope, rope index), their programs named."""

    ckpt: VlmCheckpoint
    plans: list[DiePlan]
    target: Target
    processor: object
    grids: dict
    vision: Programs
    steps: Programs
    mrope: Programs
    rope_index: Programs

    def build(self, request: VlmCompileRequest, report: CompileReport, root: Path) -> None:
        # Step 1. Every graph: vision, language, mrope, rope index, on one pool of processes.
        with compile_context(request, root, self.target, report) as ctx:
            vision = write_visual(ctx, self.ckpt, self.vision, self.grids)
            graphs = compile_steps(ctx, self.steps)
            mrope = compile_programs(ctx, self.mrope)
            [rope_index] = compile_programs(ctx, self.rope_index)
        # Step 2. Documents, tokenizer, processor config, embedding table.
        write_documents(root, tree_config(self.ckpt, ctx, self.plans, vision), graphs,
                        mrope=mrope, rope_index=rope_index)
        copy_tokenizer(self.ckpt, root, extras=(layout.PREPROCESSOR,))
        if not (root / layout.PREPROCESSOR).is_file():
            self.processor.save_pretrained(root)
        save_embedding(self.ckpt, root, request.torch_dtype,
                       f"{self.ckpt.text_prefix}embed_tokens.weight")
        write_report(ctx)

    @property
    def static(self) -> list[Programs]:
        return [self.vision, self.mrope, self.rope_index]


def plan_tree(ckpt: VlmCheckpoint, request: VlmCompileRequest) -> VlmTree:
    plans = plan_dies(ckpt.dims, request.dies, shard_unit(ckpt.int4))
    check_vision_dies(ckpt.config, request)
    target = request.target()
    processor = image_processor(ckpt.path, ckpt.config.vision_config)
    grids = {size: patch_grid(processor, size) for size in request.image_sizes}
    runs = max_vision_runs(request, grids, ckpt.config.vision_config.spatial_merge_size)
    return VlmTree(ckpt, plans, target, processor, grids,
                   vision_programs(ckpt, grids, request, target),
                   step_programs(ckpt, plans, request, target),
                   mrope_programs(ckpt, plans, request, target),
                   rope_index_programs(request, runs, target))


def vlm_budget(tree: VlmTree, request: VlmCompileRequest) -> Budget:
    """The language model's step graphs (budget.estimate) plus the vision tower's weights and
    the vision, mrope and rope-index graphs."""
    ckpt = tree.ckpt
    steps = estimate(ckpt, tree.plans, request, Schedule.planned(tree.steps.graphs, request))
    with torch.device("meta"):
        tower = ckpt.spec.hf_class(ckpt.spec.vision_class)._from_config(
            ckpt.config.vision_config)
    itemsize = torch.empty(0, dtype=request.torch_dtype).element_size()
    cached = sum(len(Schedule.planned(k.graphs, request).cached) for k in tree.static)
    return with_static_graphs(steps, tree.static, cached,
                              sum(p.numel() for p in tower.parameters()) * itemsize)


def compile_vlm(request: VlmCompileRequest) -> Path:
    validate(request)
    tree = plan_tree(VlmCheckpoint.open(request), request)
    budget = vlm_budget(tree, request)
    check_disk(budget, request.artifacts_path)
    report = CompileReport(budget.graphs, request.progress, request.verbose)
    report.say(budget.line())
    return compile_into(request.artifacts_path, report, partial(tree.build, request, report))
