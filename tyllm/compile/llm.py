"""The compile recipe: checkpoint -> per-die, per-seq_len TVM libraries in the artifact tree."""

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tyllm.artifacts import layout
from tyllm.artifacts.params import save_params
from tyllm.artifacts.staging import check_not_a_file
from tyllm.backends import Target
from tyllm.capture.export import step_inputs
from tyllm.checkpoint import load_config
from tyllm.compile.budget import check_disk, estimate
from tyllm.compile.programs import Programs, Schedule, compile_context
from tyllm.compile.report import CompileReport
from tyllm.compile.request import CompileRequest, validate
from tyllm.compile.steps import StepCheckpoint, StepRecipe, compile_steps, step_programs
from tyllm.compile.tree import (
    check_tree_destination,
    compile_into,
    copy_tokenizer,
    save_embedding,
    step_config,
    write_documents,
    write_report,
)
from tyllm.models.decoder import causal_mask
from tyllm.models.loading import SHARED_CONSTANTS, build_die_step
from tyllm.models.registry import arch_for_config
from tyllm.quant.int4 import shard_unit
from tyllm.shard.plan import DiePlan, plan_dies


def save_graph_params(root: Path, plan: DiePlan, seq_len: int, step) -> None:
    """The graph's constants: the die's rope tables and the causal mask of `seq_len` rows."""
    params = dict(step.named_parameters())
    save_params(layout.ensure_parent(root, layout.constants_file(plan.die, seq_len)),
                {n: params[n] for n in SHARED_CONSTANTS})
    save_params(layout.ensure_parent(root, layout.graph_params_file(plan.die, seq_len)),
                {"causal_mask": causal_mask(seq_len)})


class Checkpoint(StepCheckpoint):
    """The parts of an LLM's HF folder the compiler reads."""

    recipe = StepRecipe(step_inputs, save_graph_params, rope_tables=True)
    kind = "llm"

    def __init__(self, path: Path):
        config = load_config(path)
        self.arch = arch_for_config(config)
        super().__init__(path, config, self.arch.dims_from_config(config), config)

    @classmethod
    def open(cls, request: CompileRequest) -> "Checkpoint":
        return cls(request.model_path)

    @property
    def architecture(self) -> str:
        return self.arch.name

    def facts(self, request: CompileRequest) -> dict:
        return {"graph": "llm-step", "embedding_as_input": request.embedding_as_input}

    def build_step(self, plan: DiePlan, request: CompileRequest, panels: int | None):
        return build_die_step(self.arch, self.config, plan, self.reader, max_kv=request.max_kv,
                              embedding_as_input=request.embedding_as_input,
                              dtype=request.torch_dtype, int4=self.int4, panels=panels)


@dataclass(frozen=True)
class LlmTree:
    """What an LLM tree is compiled from, decided before any work: the checkpoint, the die
    plans, the target and the step graphs (their programs named, not yet compiled)."""

    ckpt: Checkpoint
    plans: list[DiePlan]
    target: Target
    steps: Programs

    def build(self, request: CompileRequest, report: CompileReport, root: Path) -> None:
        # Step 1. Every die's weights, then each distinct (batch, seq_len) program compiled once.
        with compile_context(request, root, self.target, report) as ctx:
            graphs = compile_steps(ctx, self.steps)
        # Step 2. Documents, tokenizer, embedding table, report.
        write_documents(root, step_config(self.ckpt, ctx, self.plans), graphs)
        copy_tokenizer(self.ckpt, root)
        if request.embedding_as_input:
            save_embedding(self.ckpt, root, request.torch_dtype)
        write_report(ctx)


def plan_tree(request: CompileRequest) -> LlmTree:
    ckpt = Checkpoint.open(request)
    # Refuse impossible die counts (and int4 groups split across dies) before any work.
    plans = plan_dies(ckpt.dims, request.dies, shard_unit(ckpt.int4))
    target = request.target()
    return LlmTree(ckpt, plans, target, step_programs(ckpt, plans, request, target))


def compile_llm(request: CompileRequest) -> Path:
    """Compiles into a staging folder beside the destination, then moves it into place."""
    validate(request)
    check_not_a_file(request.artifacts_path)
    check_tree_destination(request.artifacts_path)
    tree = plan_tree(request)
    budget = estimate(tree.ckpt, tree.plans, request, Schedule.planned(tree.steps.graphs, request))
    check_disk(budget, request.artifacts_path)
    report = CompileReport(budget.graphs, request.progress, request.verbose)
    report.say(budget.line())
    return compile_into(request.artifacts_path, report, partial(tree.build, request, report))
