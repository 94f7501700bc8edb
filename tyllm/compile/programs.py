"""One scheduler for every graph of a tree: LLM and VLM language steps (a library per KV
window), vision, mrope and rope-index graphs (static: the one library key core.STATIC). Three
phases:

1. Each graph names its program per library key by fingerprint (no weights needed); the program
   cache is asked, and the worker processes for the programs it lacks start
   (tyllm/compile/jobs.py); while they import, the graphs' weights and constants are written.
2. Each distinct program the cache lacks is compiled once, by the first graph that runs it, in
   this process and the workers, and kept in the program cache as soon as it is done; the bar
   and the report count graphs in job order whichever worker finishes first.
3. Every other graph is placed: the same library (a hard link in-tree, a copy from the cache)
   and its ONNX twin relinked to the graph's own weights.
"""

import shutil
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from tyllm.artifacts.layout import ensure_parent, share_file
from tyllm.backends import Target
from tyllm.capture.onnx_export import relink_onnx
from tyllm.compile import program_cache
from tyllm.compile.core import STATIC, ProgramFiles
from tyllm.compile.jobs import InOrder, Pool
from tyllm.compile.report import CompileReport
from tyllm.compile.request import Request


@dataclass(frozen=True)
class CompileContext:
    """What every stage of one compile works in: the request, the staging tree `root`, the
    target, the report and the pool of compile processes."""

    request: Request
    root: Path
    target: Target
    report: CompileReport
    pool: Pool


@contextmanager
def compile_context(request: Request, root: Path, target: Target, report: CompileReport):
    """A CompileContext whose pool's workers end with it."""
    with Pool(request.jobs) as pool:
        yield CompileContext(request, root, target, report, pool)


@dataclass(frozen=True)
class Graph:
    """One graph of the tree: what the bar calls it (die, rows, kind, batch), its program's
    fingerprint per library key (`prints`), its files, what its buffer_config entry adds
    (`entry`), and `job(files)`: the picklable compile job (tyllm/compile/jobs.py) that writes
    `files` (narrowed to the keys it compiles) and answers {"io": {key: io}, "timings"}."""

    die: int
    rows: int
    kind: str
    prints: dict
    files: ProgramFiles
    job: Callable
    entry: dict = field(default_factory=dict)
    batch: int = 1

    @property
    def windows(self) -> list[int] | None:
        """The KV windows the report lists (None for a static graph)."""
        return None if STATIC in self.prints else list(self.prints)


@dataclass(frozen=True)
class Programs:
    """Graphs of one kind compiled together: `name` in compile_report.json's workers, the
    `layers` of one program (jobs.worker_count) and `write(root)`, which writes the files the
    graphs read (weights, constants) while the workers start."""

    name: str
    graphs: list[Graph]
    layers: int
    write: Callable[[Path], None]

    @property
    def distinct(self) -> int:
        return len({f for g in self.graphs for f in g.prints.values()})


class Program(NamedTuple):
    """A compiled program: its library, ONNX twin and io."""

    library: Path
    twin: Path | None
    io: dict


@dataclass(frozen=True)
class Schedule:
    """The programs of some graphs that the cache holds (`cached`: fingerprint -> Program) and
    which graph compiles which of the rest (`owned`: graph index -> library keys; the first
    graph that runs a program owns it)."""

    cached: dict
    owned: dict

    @classmethod
    def of(cls, graphs: list[Graph], request: Request) -> "Schedule":
        cached = cached_programs(graphs, request)
        return cls(cached, owners(graphs, cached))

    @classmethod
    def planned(cls, graphs: list[Graph], request: Request) -> "Schedule":
        """The schedule the plan line tells before any work: the programs whose entries the
        cache has (not yet checked, and without their Program; the scheduler's lookup checks
        them, so one found damaged is removed, said in the compile log and compiled)."""
        stored = stored_programs(graphs, request)
        return cls(dict.fromkeys(stored), owners(graphs, stored))


def owners(graphs: list[Graph], cached) -> dict:
    """graph index -> the library keys it compiles: those of the programs no earlier graph runs
    and `cached` lacks."""
    taken, owned = set(cached), {}
    for i, g in enumerate(graphs):
        for key, f in g.prints.items():
            if f not in taken:
                taken.add(f)
                owned.setdefault(i, []).append(key)
    return owned


def cached_programs(graphs: list[Graph], request: Request) -> dict:
    """fingerprint -> Program, for the programs the cache holds (with an ONNX twin where the
    graphs have one), every file checked (program_cache.files)."""
    if not request.use_cache:
        return {}
    twins = {}
    for g in graphs:
        for f in g.prints.values():
            twins.setdefault(f, g.files.onnx is not None)
    found = {f: program_cache.files(f, twin) for f, twin in twins.items()}
    return {f: Program(*hit) for f, hit in found.items() if hit is not None}


def stored_programs(graphs: list[Graph], request: Request) -> set[str]:
    """The fingerprints of `graphs` that have an entry in the cache (with a twin where the
    graphs have one), listed without reading the entries."""
    try:
        stored = {p.name: p for p in program_cache.stored_entries()} if request.use_cache else {}
    except OSError:  # a cache that cannot be read: the scheduler's lookups say why
        return set()
    return {f for g in graphs for f in g.prints.values() if f in stored and (
        g.files.onnx is None or (stored[f] / program_cache.TWIN_FOLDER).is_dir())}


def compile_programs(ctx: CompileContext, programs: Programs) -> list[dict]:
    """Every graph's buffer_config entries (one per library key), in graph order."""
    graphs = programs.graphs
    run = Run(ctx, graphs, Schedule.of(graphs, ctx.request))
    jobs = run.jobs()
    layers = len(jobs) * programs.layers
    ctx.pool.start(len(jobs), layers)  # the workers import while the weights are written
    programs.write(ctx.root)
    ctx.report.add_workers(programs.name, ctx.pool.run(jobs, ctx.root, ctx.target, ctx.report,
                                                       run.done, layers))
    ios = [run.placed(i) for i in range(len(graphs))]
    return [entry(g, key, io[key]) for g, io in zip(graphs, ios, strict=True) for key in g.prints]


def entry(g: Graph, key, io: dict) -> dict:
    """A graph's buffer_config entry for one library key: its files and its program's inputs,
    outputs and parameter order (shared by every graph that runs the program)."""
    window = {} if key is STATIC else {"window": key}
    return {**g.entry, **window, "library": g.files.libraries[key], "onnx": g.files.onnx, **io}


class Run:
    """One scheduler run: the jobs of a Schedule, what they answer (kept in the program cache
    at once, counted on the bar in job order), and the placing of every other program."""

    def __init__(self, ctx: CompileContext, graphs: list[Graph], schedule: Schedule):
        self.ctx, self.graphs, self.schedule = ctx, graphs, schedule
        self.owners = list(schedule.owned)  # job k compiles graph owners[k]'s owned keys
        self.ios, self.timings = {}, {}
        self.in_order = InOrder(self.counted)

    def jobs(self) -> list[Callable]:
        return [self.graphs[i].job(self.graphs[i].files.only(keys))
                for i, keys in self.schedule.owned.items()]

    def done(self, k: int, result: dict) -> None:
        self.finished(k, result)
        self.in_order(k, result)

    def finished(self, k: int, result: dict) -> None:
        """Kept in the program cache at once: a compile killed later resumes with it."""
        i = self.owners[k]
        self.ios[i] = result["io"]
        if self.ctx.request.use_cache:
            for key in self.schedule.owned[i]:
                program_cache.store(self.graphs[i].prints[key], *self.in_tree(i, key))

    def counted(self, k: int, result: dict) -> None:
        i = self.owners[k]
        with self.bar(i) as t:
            t.update(result["timings"])
        self.timings[i] = t

    def bar(self, i: int):
        """Graph i's step of the bar, or the timings of the one its compiled keys took."""
        if i in self.timings:
            return nullcontext(self.timings[i])
        g = self.graphs[i]
        return self.ctx.report.graph(g.die, g.rows, g.kind, g.windows, g.batch)

    def in_tree(self, i: int, key) -> Program:
        """The program graph i compiled for `key`, in the staging tree."""
        g, root = self.graphs[i], self.ctx.root
        return Program(root / g.files.libraries[key], root / g.files.onnx if g.files.onnx
                       else None, self.ios[i][key])

    def placed(self, i: int) -> dict:
        """Graph i's io per library key: the keys it compiled, and the others placed from
        their owner or the cache (the ONNX twin relinked once, when it compiled none)."""
        io = dict(self.ios.get(i, {}))
        rest = [key for key in self.graphs[i].prints if key not in io]
        if rest:
            with self.bar(i) as t:
                for n, key in enumerate(rest):
                    io[key] = self.place(i, key, t, i not in self.schedule.owned and n == 0)
        return io

    def place(self, i: int, key, timings: dict, relink: bool) -> dict:
        """Graph i runs a program compiled already: the same library file (a hard link
        in-tree, a copy from the cache or where links fail) and (`relink`) its ONNX twin
        pointing into the graph's weights."""
        g, root = self.graphs[i], self.ctx.root
        program, stage = self.source(g.prints[key])
        with self.ctx.report.timed(timings, stage):
            place = share_file if stage == "shared" else shutil.copyfile
            place(program.library, ensure_parent(root, g.files.libraries[key]))
            if relink and g.files.onnx is not None and program.twin is not None:
                relink_onnx(program.twin, root / g.files.onnx, root / g.files.weights)
        return program.io

    def source(self, fingerprint: str) -> tuple[Program, str]:
        """Program `fingerprint`, and whether it is "cached" or "shared" in-tree."""
        if fingerprint in self.schedule.cached:
            return self.schedule.cached[fingerprint], "cached"
        i, key = next((i, key) for i, keys in self.schedule.owned.items() for key in keys
                      if self.graphs[i].prints[key] == fingerprint)
        return self.in_tree(i, key), "shared"
