"""`tyllm verify`: every file against the manifest, and every graph against onnxruntime.

Each die graph runs on its own (the all-reduce is the one-die identity on both sides) with
the same random inputs in the tree's backend and in onnxruntime on the exported ONNX twin.
"""

import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import external_data_helper

from tyllm.artifacts.manifest import verify_files
from tyllm.artifacts.windows import history_mask
from tyllm.capture.export import HISTORY_MASK
from tyllm.dtypes import DTYPES
from tyllm.runtime.collective import IdentityMember, bind_member
from tyllm.runtime.die import DieRunner
from tyllm.runtime.tree import Tree

TOLERANCE = {"float32": 1e-3, "float16": 5e-2}  # max |diff| relative to max |reference|


@dataclass
class GraphCheck:
    die: int
    seq_len: int
    max_abs_diff: float
    relative_diff: float
    ok: bool
    kind: str = "language"  # or "vision" (seq_len is then the graph's patch count)
    window: int | None = None  # a language graph's KV window
    batch: int = 1  # sequences per call of a language graph

    def label(self) -> str:
        if self.kind == "vision":
            return f"vision die {self.die} ({self.seq_len} patches)"
        batch = "" if self.batch == 1 else f" batch {self.batch}"
        return f"die {self.die}{batch} seqlen {self.seq_len} kv {self.window}"


def random_inputs(graph: dict, tree: Tree, gen: torch.Generator) -> dict[str, np.ndarray]:
    """Random tokens and caches; every sequence of a batched graph at its own start."""
    m, window, batch = graph["seq_len"], graph["window"], graph.get("batch", 1)
    starts = [max(0, min(tree.max_kv - m, window // 2 - b)) for b in range(batch)]
    fixed = {"start_pos": torch.tensor(starts),
             "last_index": torch.tensor([b * m + m - 1 for b in range(batch)]),
             HISTORY_MASK: torch.stack([history_mask(s, window) for s in starts]).reshape(
                 next(t["shape"] for t in graph["inputs"] if t["name"] == HISTORY_MASK))}
    feeds = {}
    for t in graph["inputs"]:
        dtype, shape = DTYPES.get(t["dtype"]), t["shape"]
        if t["name"] == "input_ids":
            value = torch.randint(0, tree.config["vocab_size"], shape, generator=gen)
        elif t["name"] in fixed:
            value = fixed[t["name"]]
        else:
            value = (torch.randn(shape, generator=gen) * 0.5).to(dtype)
        feeds[t["name"]] = value.numpy()
    return feeds


def onnx_inside(tree: Tree, name: str) -> Path:
    """An ONNX twin whose external weight files all lie inside the tree (onnxruntime would open
    whatever path the graph names)."""
    path = tree.file(name)
    model = onnx.load(str(path), load_external_data=False)
    for tensor in external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                tree.file(posixpath.normpath(posixpath.join(posixpath.dirname(name),
                                                            entry.value)))
    return path


def compare(tree: Tree, onnx: str, program, feeds: dict, die: int, key: int,
            kind: str = "language", window: int | None = None, batch: int = 1) -> GraphCheck:
    session = ort.InferenceSession(str(onnx_inside(tree, onnx)), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    got = program(*[torch.from_numpy(v) for v in feeds.values()])
    diff = max(float(np.abs(e - g.numpy()).max()) for e, g in zip(expected, got, strict=True))
    scale = max(float(np.abs(e).max()) for e in expected) or 1.0
    ok = diff / scale <= TOLERANCE[tree.config["dtype"]]
    return GraphCheck(die, key, diff, diff / scale, ok, kind, window, batch)


def check_graph(tree: Tree, runner: DieRunner, graph: dict, gen) -> GraphCheck:
    """A step graph against its (batch, M)'s ONNX twin (its KV window is symbolic)."""
    m, window, batch = graph["seq_len"], graph["window"], graph.get("batch", 1)
    program = runner.programs[m, window] if batch == 1 else runner.batched[batch, window]
    return compare(tree, graph["onnx"], program, random_inputs(graph, tree, gen), graph["die"],
                   m, window=window, batch=batch)


def check_vision(tree: Tree, gen) -> list[GraphCheck]:
    """VLM trees: every vision graph (key: its patch count) on random pixels."""
    from tyllm.artifacts.vlm_layout import size_tag
    from tyllm.runtime.vlm.runners import VisionRunner

    checks, graphs = [], tree.vision_buffers["graphs"]
    for rank in sorted({g["die"] for g in graphs}):
        runner = VisionRunner(tree, rank)
        for g in (g for g in graphs if g["die"] == rank):
            pixels = torch.randn(g["inputs"][0]["shape"], generator=gen).numpy()
            checks.append(compare(tree, g["onnx"], runner.programs[size_tag(g["size"])],
                                  {"pixel_values": pixels}, rank, g["inputs"][0]["shape"][0],
                                  "vision"))
    return checks


def verify_tree(root: Path, seed: int = 0) -> list[GraphCheck]:
    tree = Tree(Path(root))
    verify_files(tree.root, tree.manifest)
    gen, checks = torch.Generator().manual_seed(seed), []
    with bind_member(IdentityMember()):
        for die in range(tree.dies):
            runner = DieRunner(tree, die)
            graphs = [*sorted(tree.graphs_for(die).items()),
                      *sorted(tree.batched_graphs_for(die).items())]
            checks += [check_graph(tree, runner, g, gen) for _, g in graphs if g["onnx"]]
        if tree.config["kind"] == "vlm":
            checks += check_vision(tree, gen)
    return checks
