"""Peak host memory of loading and running a tree (LLM or VLM), in a fresh process, against what
the tree must hold: its parameter bytes plus one sequence's KV caches.

Threads: the process's high-water mark (VmHWM) minus its RSS right after importing tyllm, torch
and the tree's backend. Processes: each die process's high-water mark minus that of a bare die
process (spawned with the same imports), summed over the dies; the host holds no weights.
"""

import json
import math
import multiprocessing
import subprocess
import sys
from pathlib import Path

from tyllm.artifacts import layout
from tyllm.dtypes import DTYPES
from tyllm.runtime.tree import Tree

CHILD = """
import json, sys
import torch  # noqa: F401  (imported before the baseline is read, as is the tree's backend)
import tyllm.runtime.die, tyllm.runtime.workers  # noqa: F401
from tyllm.bench.load_memory import measure

print("RESULT" + json.dumps(measure(**json.loads(sys.argv[1]))))
"""


def status(key: str, pid="self") -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def bare_die(queue, backend: str) -> None:
    """What a die process holds before it loads anything (the imports a die process makes)."""
    import tyllm.runtime.die
    import tyllm.runtime.workers  # noqa: F401
    from tyllm.backends import get_backend

    get_backend(backend)
    queue.put(status("VmHWM"))


def bare_die_peak(backend: str) -> int:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=bare_die, args=(queue, backend))
    process.start()
    peak = queue.get()
    process.join()
    return peak


def run_a_request(session) -> None:
    """8 greedy tokens: after 16 prompt tokens, or (a VLM tree that takes images) after a
    chat prompt holding an image of the first compiled size, through the vision dies."""
    config = session.tree.config
    if config["kind"] != "vlm" or "image" not in config["modalities"]:
        session.generate(list(range(1, 17)), max_new_tokens=8)
        return
    from PIL import Image

    from tyllm.runtime.vlm.prompt import multimodal_prompt

    height, width = config["vision"]["sizes"][0]["size"]
    image = Image.new("RGB", (width, height), (120, 60, 200))
    session.generate_multimodal(multimodal_prompt(session.tree.root, "Describe it.", 1, 0),
                                images=[image], max_new_tokens=8)


def measure(tree: str, workers: str) -> dict:
    """Runs in the fresh process, after its imports (a VLM session's too: transformers' image
    processing is code, ~230 MiB of it, not what the tree holds)."""
    from tyllm import runtime

    config = Tree(Path(tree)).config  # the tree's backend is imported with it
    if config["kind"] == "vlm":
        import tyllm.runtime.vlm.load  # noqa: F401

    baseline = status("VmRSS")
    with runtime.load(tree, workers=workers) as session:
        run_a_request(session)
        pools = (session.workers, getattr(session, "vision", None))  # a VLM's vision dies too
        dies = [status("VmHWM", p.pid) for w in pools for p in getattr(w, "procs", [])]
    if workers == "processes":
        floor = bare_die_peak(config["backend"])
        return {"peak_above_imports_bytes": sum(d - floor for d in dies)}
    return {"peak_above_imports_bytes": status("VmHWM") - baseline}


def parameter_files(tree: Tree) -> set[Path]:
    """Every parameter file a loaded tree holds: the step graphs' weights and constants, the
    embedding table when the host looks tokens up, and a VLM's vision, mrope and rope-index
    parameters."""
    keys, buffers = ("weights", "constants", "graph_params"), tree.buffers
    graphs = buffers["graphs"] + (tree.vision_buffers["graphs"] if tree.vision_buffers else [])
    names = {g[k] for g in graphs for k in keys if g.get(k)}
    names |= {e["params"] for e in buffers.get("mrope", [])}
    if "rope_index" in buffers:
        names.add(buffers["rope_index"]["params"])
    if layout.EMBEDDING in tree.manifest["files"]:
        names.add(layout.EMBEDDING)
    return {tree.root / name for name in names}


def tree_bytes(root: Path) -> tuple[int, int]:
    """(parameter bytes of every die, bytes of one sequence's K and V caches on every die)."""
    tree = Tree(root)
    kv = sum(2 * math.prod(e["k_cache"]["shape"]) * DTYPES[e["k_cache"]["dtype"]].itemsize
             for e in tree.buffers["kv_cache"])
    return sum(p.stat().st_size for p in parameter_files(tree)), kv


def load_memory(tree: Path, workers: str) -> dict:
    job = {"tree": str(tree), "workers": workers}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], capture_output=True,
                          text=True, timeout=1800)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"loading {tree} failed:\n{done.stderr[-3000:]}")
    peak = json.loads(lines[-1][len("RESULT"):])["peak_above_imports_bytes"]
    params, kv = tree_bytes(tree)
    return {"workers": workers, "param_bytes": params, "kv_bytes": kv,
            "peak_rss_above_imports_bytes": peak, "over_params_plus_kv": peak / (params + kv)}
