"""The step graphs of every die (LLM trees and VLM language models alike), in three phases:

1. Each (batch, M) graph's program is fingerprinted per KV window (no weights needed), and
   the worker processes for the programs the cache lacks start (tyllm/compile/jobs.py); while
   they import, die by die, one die's weights in memory at a time, its weights and per-M
   constants are written.
2. Each distinct program that no earlier compile left in the program cache is captured once
   and lowered per window, in this process and the workers: the first die that runs it owns
   it.
3. Every die's graphs are placed: the program its owner compiled, or the cached one.
"""

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from tyllm.artifacts import layout
from tyllm.backends import library_suffix
from tyllm.compile import program_cache
from tyllm.compile.core import place_program
from tyllm.compile.jobs import InOrder, Pool
from tyllm.compile.step_capture import capture_windows, release_weights, save_die_weights
from tyllm.models.loading import die_weights
from tyllm.shard.plan import DiePlan


@dataclass(frozen=True)
class StepRecipe:
    """What differs between the step graphs of LLM and VLM trees: the example inputs, the
    constants written beside each M, and whether a rope-table file is among them."""

    make_inputs: Callable
    save_params: Callable  # (root, plan, seq_len, step)
    rope_tables: bool


@dataclass(frozen=True)
class StepJob:
    """Die `plan.die`'s step of `shape` (batch, M), lowered for `windows` (a compile job:
    tyllm/compile/jobs.py)."""

    steps: Callable  # plan -> the die's step module
    plan: DiePlan
    shape: tuple[int, int]
    windows: tuple[int, ...]
    recipe: StepRecipe
    request: object

    def __call__(self, root: Path, target, report) -> dict:
        """Builds the die's step, drops its weights (written already), captures and lowers."""
        step, timings = self.steps(self.plan), {}
        release_weights(die_weights(step))
        io = capture_windows(step, self.plan, self.shape, list(self.windows), self.request,
                             root, target, timings, report, self.recipe.make_inputs)
        return {"io": io, "timings": timings}


@dataclass(frozen=True)
class DieGraph:
    """Die `plan.die`'s step graph of `shape` (batch, M): its program's fingerprint per KV
    window."""

    plan: DiePlan
    shape: tuple[int, int]
    prints: dict


def compile_steps(plans: list[DiePlan], steps: Callable, fingerprint: Callable, request,
                  root: Path, target, report, recipe: StepRecipe, pool: Pool) -> list[dict]:
    """Every die's step graphs as buffer_config entries. `steps(plan)` builds a die's step
    module (picklable: workers call it too); `fingerprint(plan, shape, window)` names a
    program for the cache; `pool` compiles the programs."""
    graphs = [g for plan in plans for g in die_graphs(plan, fingerprint, request)]
    first_entry = len(report.graphs)
    cached = cached_programs(graphs, request)
    owned = owned_windows(graphs, cached)
    jobs = [StepJob(steps, graphs[i].plan, graphs[i].shape, tuple(ws), recipe, request)
            for i, ws in owned.items()]
    results = StepResults(graphs, owned, request, root, report)
    layers = len(jobs) * steps.num_layers()
    pool.start(len(jobs), layers)  # workers import while the weights are written
    for plan in plans:
        write_die(plan, steps, request, root, recipe)
    report.add_workers("step", pool.run(jobs, root, target, report, results.done, layers))
    ios, timings = results.ios, results.timings
    entries = [entry for i, g in enumerate(graphs)
               for entry in place_die_graph(i, g, ios, timings, owned, cached, graphs, request,
                                            root, report, recipe)]
    shapes = list(request.graph_shapes)
    report.graphs[first_entry:] = sorted(  # the report lists graphs die by die, as compiled
        report.graphs[first_entry:],
        key=lambda e: (e["die"], shapes.index((e.get("batch", 1), e["seq_len"]))))
    return entries


class StepResults:
    """What the step jobs answer, in graph terms: job k compiles graph owned[k]'s windows."""

    def __init__(self, graphs: list[DieGraph], owned: dict, request, root: Path, report):
        self.graphs, self.owned, self.request, self.root, self.report = (graphs, owned, request,
                                                                         root, report)
        self.owner, self.ios, self.timings = list(owned), {}, {}
        self.in_order = InOrder(self.counted)

    def done(self, k: int, result: dict) -> None:
        self.finished(k, result)
        self.in_order(k, result)

    def finished(self, k: int, result: dict) -> None:
        """Kept in the program cache at once: a compile killed later resumes with it."""
        i = self.owner[k]
        self.ios[i] = result["io"]
        for w in self.owned[i]:
            keep_program(self.graphs[i].prints[w], self.root, self.graphs[i], w, self.request,
                         result["io"][w])

    def counted(self, k: int, result: dict) -> None:
        i = self.owner[k]
        g = self.graphs[i]
        with self.report.graph(g.plan.die, g.shape[1], layout.graph_kind(g.shape[1]),
                               list(g.prints), g.shape[0]) as t:
            t.update(result["timings"])
        self.timings[i] = t


def die_graphs(plan, fingerprint, request) -> list[DieGraph]:
    """Die `plan.die`'s step graphs, their programs named (no weights needed)."""
    return [DieGraph(plan, shape, {w: fingerprint(plan, shape, w) for w in request.windows})
            for shape in request.graph_shapes]


def write_die(plan, steps, request, root: Path, recipe) -> None:
    """Die `plan.die`'s weights and constants on disk (its step built, then dropped)."""
    step = steps(plan)
    save_die_weights(root, plan, step)
    for m in request.seq_len_list:
        recipe.save_params(root, plan, m, step)


def cached_programs(graphs: list[DieGraph], request) -> dict:
    """fingerprint -> (library, twin, io) of the programs the cache holds."""
    prints = {f for g in graphs for f in g.prints.values()} if request.use_cache else ()
    found = {f: program_cache.files(f, request.export_onnx) for f in prints}
    return {f: hit for f, hit in found.items() if hit is not None}


def owned_windows(graphs: list[DieGraph], cached: dict) -> dict[int, list[int]]:
    """graph index -> the KV windows it compiles: those of programs no earlier graph of the
    tree runs and the cache does not hold."""
    owner, owned = set(cached), {}
    for i, g in enumerate(graphs):
        for w, f in g.prints.items():
            if f not in owner:
                owner.add(f)
                owned.setdefault(i, []).append(w)
    return owned


def library_of(g: DieGraph, window: int, request) -> str:
    return layout.library_file(g.plan.die, g.shape[1], window, request.windows[-1], g.shape[0],
                               library_suffix(request.backend))


def onnx_of(g: DieGraph, request) -> str | None:
    return layout.onnx_file(g.plan.die, g.shape[1], g.shape[0]) if request.export_onnx else None


def source_of(f: str, cached: dict, graphs: list[DieGraph], owned: dict, ios: dict, root: Path,
              request) -> tuple[tuple, str]:
    """(library, twin, io) of program `f`, and whether it is "cached" or "shared" in-tree."""
    if f in cached:
        return cached[f], "cached"
    i, w = next((i, w) for i, ws in owned.items() for w in ws if graphs[i].prints[w] == f)
    twin = onnx_of(graphs[i], request)
    return (root / library_of(graphs[i], w, request), root / twin if twin else None,
            ios[i][w]), "shared"


def place_die_graph(i: int, g: DieGraph, ios, timings, owned, cached, graphs, request, root,
                    report, recipe) -> list[dict]:
    """Die `g.plan.die`'s entries of `g.shape`: windows it compiled, and the others placed from
    their owner or the cache (an ONNX graph relinked to this die's weights when it compiled
    none)."""
    io = dict(ios.get(i, {}))
    placed = [w for w in g.prints if w not in io]
    if placed:
        with (report.graph(g.plan.die, g.shape[1], layout.graph_kind(g.shape[1]),
                           list(g.prints), g.shape[0]) if i not in timings
              else nullcontext(timings[i])) as t:
            for n, w in enumerate(placed):
                source, stage = source_of(g.prints[w], cached, graphs, owned, ios, root,
                                          request)
                io[w] = place(g, w, source, stage, request, root, t, report,
                              relink=i not in owned and n == 0)
    return [graph_entry(g, w, io[w], request) | ({} if recipe.rope_tables
                                                else {"constants": None}) for w in g.prints]


def place(g: DieGraph, window: int, source: tuple, stage: str, request, root: Path, timings,
          report, relink: bool) -> dict:
    """The die runs a program compiled already: the same library file (a hard link in-tree, a
    copy from the cache) and (`relink`) the same ONNX graph pointing into its weights."""
    library, twin, io = source
    with report.timed(timings, stage):
        place_program(library, twin, root, library_of(g, window, request),
                      onnx_of(g, request) if relink else None,
                      layout.weights_file(g.plan.die), copy=stage != "shared")
    return io


def graph_entry(g: DieGraph, window: int, io: dict, request) -> dict:
    """A graph's buffer_config entry: die d's file names for (batch, M, KV window), and the
    program's inputs, outputs and parameter order (`io`, shared by every die that runs the
    program). Every batch size reads batch_1's weights and constants."""
    d, (batch, seq_len) = g.plan.die, g.shape
    return {"die": d, "batch": batch, "seq_len": seq_len, "window": window,
            "kind": layout.graph_kind(seq_len), "library": library_of(g, window, request),
            "weights": layout.weights_file(d), "constants": layout.constants_file(d, seq_len),
            "graph_params": layout.graph_params_file(d, seq_len), "onnx": onnx_of(g, request),
            **{k: io[k] for k in ("inputs", "outputs", "param_order")}}


def keep_program(fingerprint: str, root: Path, g: DieGraph, window: int, request,
                 io: dict) -> None:
    if request.use_cache:
        twin = onnx_of(g, request)
        program_cache.store(fingerprint, root / library_of(g, window, request),
                            root / twin if twin else None, io)
