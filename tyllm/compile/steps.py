"""The step graphs of a language model, LLM trees and VLM language models alike: one graph per
(die, batch, M), one library per KV window, compiled by the scheduler (programs.py). What
differs between the two is the checkpoint's subclass (llm.Checkpoint, vlm.VlmCheckpoint)."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tyllm.artifacts import layout
from tyllm.artifacts.documents import eos_token_ids
from tyllm.backends import Target, library_suffix
from tyllm.checkpoint import TensorReader, tokenizer_file
from tyllm.compile import program_cache
from tyllm.compile.core import Lowering, ProgramFiles
from tyllm.compile.programs import CompileContext, Graph, Programs, compile_programs
from tyllm.compile.request import GraphShape, Request
from tyllm.compile.step_capture import capture_windows, release_weights, save_die_weights
from tyllm.models.loading import die_weights
from tyllm.quant.int4 import read_int4_scheme
from tyllm.shard.plan import DiePlan


@dataclass(frozen=True)
class StepRecipe:
    """What differs between the step graphs of LLM and VLM trees: the example inputs, the
    constants written beside each M (`save_params(root, plan, seq_len, step)`), and whether a
    rope-table file is among them."""

    make_inputs: Callable
    save_params: Callable
    rope_tables: bool


class StepCheckpoint:
    """The parts of a HF folder a language model's step graphs are compiled from. A subclass
    reads its kind of folder and says what differs: `recipe`, `kind` (config.json's), `open`,
    `architecture`, `facts` (its programs' own fingerprint facts) and `build_step`."""

    recipe: StepRecipe
    kind: str

    def __init__(self, path: Path, config, dims, text_config, tokenizer: Path | None = None):
        self.path, self.config, self.dims = path, config, dims
        self.int4 = read_int4_scheme(config)
        self.tokenizer = tokenizer or tokenizer_file(path)
        self.eos = eos_token_ids(path, text_config)  # read now: a bad file fails before any work
        self.reader = TensorReader(path)

    @classmethod
    def open(cls, request: Request) -> "StepCheckpoint":
        raise NotImplementedError

    @property
    def architecture(self) -> str:
        raise NotImplementedError

    @property
    def tied(self) -> bool:
        return bool(getattr(self.config, "tie_word_embeddings", False))

    def facts(self, request: Request) -> dict:
        raise NotImplementedError

    def build_step(self, plan: DiePlan, request: Request, panels: int | None):
        raise NotImplementedError


@dataclass(frozen=True)
class Steps:
    """Builds a die's step module, its weights read from the request's checkpoint (picklable:
    compile workers open the checkpoint themselves)."""

    checkpoint: type[StepCheckpoint]
    request: Request
    panels: int | None

    def __call__(self, plan: DiePlan):
        return self.checkpoint.open(self.request).build_step(plan, self.request, self.panels)


@dataclass(frozen=True)
class StepJob:
    """Die `plan.die`'s step of `shape` (batch, M), lowered into `files` (a compile job:
    tyllm/compile/jobs.py)."""

    steps: Steps
    plan: DiePlan
    shape: GraphShape
    files: ProgramFiles

    def __call__(self, root: Path, target: Target, report) -> dict:
        """Builds the die's step, drops its weights (written already), captures and lowers."""
        step, at = self.steps(self.plan), Lowering(root, target, report)
        release_weights(die_weights(step))
        io = capture_windows(step, self.shape, self.files, at,
                             self.steps.checkpoint.recipe.make_inputs)
        return {"io": io, "timings": at.timings}


def step_programs(ckpt: StepCheckpoint, plans: list[DiePlan], request: Request,
                  target: Target) -> Programs:
    """Every die's step graphs, their programs named (no weights read)."""
    steps = Steps(type(ckpt), request, target.weight_panels)
    name = namer(ckpt, request, target)
    graphs = [step_graph(steps, plan, shape, name) for plan in plans
              for shape in request.graph_shapes]
    return Programs("step", graphs, ckpt.dims.num_layers, partial(write_dies, steps, plans))


def namer(ckpt: StepCheckpoint, request: Request, target: Target) -> Callable[..., str]:
    """`name(plan, shape, window)`: the program cache's name of a step program, from
    everything it depends on."""
    config = ckpt.config.to_dict()
    shared = ckpt.facts(request) | {
        "max_kv": request.max_kv, "dtype": request.dtype,
        "int4": ckpt.int4.as_json() if ckpt.int4 else None, "target": target.as_json()}
    group = ckpt.dims.group_size
    return lambda plan, shape, w: program_cache.fingerprint(config, shared | {
        "program_key": plan.program_key(group), "batch": shape.batch, "seq_len": shape.seq_len,
        "window": w} | ({"verify": True} if shape.verify else {}))


def step_graph(steps: Steps, plan: DiePlan, shape: GraphShape, name: Callable) -> Graph:
    """Die `plan.die`'s step graph of `shape`. Every batch size reads batch_1's weights and
    constants; a verify graph has no ONNX twin."""
    request, (batch, m, verify), d = steps.request, shape, plan.die
    windows, suffix = request.windows, library_suffix(request.backend)
    files = ProgramFiles({w: layout.library_file(d, m, w, windows[-1], batch, suffix, verify)
                          for w in windows},
                         layout.onnx_file(d, m, batch)
                         if request.export_onnx and not verify else None,
                         layout.weights_file(d))
    rope = steps.checkpoint.recipe.rope_tables
    kind = layout.graph_kind(m, verify)
    entry = {"die": d, "batch": batch, "seq_len": m, "kind": kind,
             "weights": layout.weights_file(d),
             "constants": layout.constants_file(d, m) if rope else None,
             "graph_params": layout.graph_params_file(d, m)}
    return Graph(d, m, kind, {w: name(plan, shape, w) for w in windows}, files,
                 partial(StepJob, steps, plan, shape), entry, batch)


def write_dies(steps: Steps, plans: list[DiePlan], root: Path) -> None:
    """Every die's weights and per-M constants, one die's weights in memory at a time (each
    die's step built, then dropped)."""
    for plan in plans:
        step = steps(plan)
        save_die_weights(root, plan, step)
        for m in steps.request.step_lengths:
            steps.checkpoint.recipe.save_params(root, plan, m, step)


def compile_steps(ctx: CompileContext, programs: Programs) -> list[dict]:
    """Every die's step graphs as buffer_config entries; the report lists them die by die,
    whichever worker finished first."""
    first = len(ctx.report.graphs)
    entries = compile_programs(ctx, programs)
    shapes = ctx.request.graph_shapes
    ctx.report.graphs[first:] = sorted(
        ctx.report.graphs[first:],
        key=lambda e: (e["die"], shapes.index(GraphShape(e.get("batch", 1), e["seq_len"],
                                                         e.get("kind") == "verify"))))
    return entries
