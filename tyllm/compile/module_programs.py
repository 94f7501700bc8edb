"""Static graphs (a VLM's vision and mrope graphs) compiled like the step graphs: each distinct
program once, in parallel (tyllm/compile/jobs.py), kept in and taken from the program cache;
every other graph of that program gets the same library and an ONNX twin pointing into its own
weights."""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tyllm.compile import program_cache
from tyllm.compile.core import place_program
from tyllm.compile.jobs import InOrder, Pool

IO_KEYS = ("inputs", "outputs", "param_order")


@dataclass(frozen=True)
class ModuleGraph:
    """One graph of the tree: what the bar calls it, its program's fingerprint, the job that
    compiles that program into `library` (run for the first graph of each program only)."""

    die: int
    rows: int
    kind: str
    program: str
    job: Callable  # (root, target, report) -> {"io": entry, "timings"}
    library: str
    onnx: str | None = None
    weights: str | None = None  # the params file this graph's ONNX twin points into


def compile_modules(graphs: list[ModuleGraph], name: str, request, root: Path, target,
                    report, layers: int, pool: Pool,
                    write: Callable[[], None] = lambda: None) -> list[dict]:
    """Each graph's entry ({library, onnx, inputs, outputs, param_order}); `layers`: the
    layers of one program (compile_jobs.worker_count); `write()` puts the graphs' weights on
    disk while the pool's workers start."""
    cached = cached_modules(graphs, request) if request.use_cache else {}
    owners = {}
    for i, g in enumerate(graphs):
        if g.program not in cached:
            owners.setdefault(g.program, i)
    ios, order = {}, list(owners.values())

    def finished(k: int, result: dict) -> None:
        g = graphs[order[k]]
        ios[g.program] = result["io"]
        if request.use_cache:
            program_cache.store(g.program, root / g.library, root / g.onnx if g.onnx else None,
                                {key: result["io"][key] for key in IO_KEYS})

    def counted(k: int, result: dict) -> None:
        g = graphs[order[k]]
        with report.graph(g.die, g.rows, g.kind) as t:
            t.update(result["timings"])

    in_order = InOrder(counted)
    pool.start(len(order), len(order) * layers)
    write()
    report.add_workers(name, pool.run([graphs[i].job for i in order], root, target, report,
                                      lambda k, r: (finished(k, r), in_order(k, r)),
                                      len(order) * layers))
    return [ios[g.program] if owners.get(g.program) == i else
            place_module(g, graphs[owners[g.program]] if g.program in owners else None,
                         ios.get(g.program) or cached[g.program], root, report)
            for i, g in enumerate(graphs)]


def cached_modules(graphs: list[ModuleGraph], request) -> dict:
    """fingerprint -> the entry of a program the cache holds (its files in the cache)."""
    found = {}
    for g in graphs:
        hit = program_cache.files(g.program, g.onnx is not None)
        if hit is not None:
            library, twin, io = hit
            found[g.program] = {**io, "library": library, "onnx": twin if g.onnx else None}
    return found


def place_module(g: ModuleGraph, owner: ModuleGraph | None, source: dict, root: Path,
                 report) -> dict:
    """A graph whose program is compiled already: by `owner` in this tree (a hard link), else
    in the cache (a copy)."""
    library = root / owner.library if owner else source["library"]
    twin = (root / owner.onnx if owner and owner.onnx else None) if owner else source["onnx"]
    stage = "shared" if owner else "cached"
    with report.graph(g.die, g.rows, g.kind) as t, report.timed(t, stage):
        place_program(library, twin, root, g.library, g.onnx, g.weights, copy=owner is None)
    return {**{key: source[key] for key in IO_KEYS}, "library": g.library, "onnx": g.onnx}
