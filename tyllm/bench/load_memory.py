"""Peak host memory of loading and running a tree, in a fresh process, against what the tree must
hold: its parameter bytes plus one sequence's KV caches.

Threads: the process's high-water mark (VmHWM) minus its RSS right after importing tyllm, torch
and TVM. Processes: each die process's high-water mark minus that of a bare die process (spawned
with the same imports), summed over the dies; the host holds no weights.
"""

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys
import torch, tvm  # noqa: F401  (imported before the baseline is read)
import tyllm.runtime.die, tyllm.runtime.workers  # noqa: F401
from tyllm.bench.load_memory import measure

print("RESULT" + json.dumps(measure(**json.loads(sys.argv[1]))))
"""


def status(key: str, pid="self") -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def bare_die(queue) -> None:
    """What a die process holds before it loads anything (the imports a die process makes)."""
    import tvm  # noqa: F401

    import tyllm.runtime.die
    import tyllm.runtime.workers  # noqa: F401

    queue.put(status("VmHWM"))


def bare_die_peak() -> int:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=bare_die, args=(queue,))
    process.start()
    peak = queue.get()
    process.join()
    return peak


def measure(tree: str, workers: str) -> dict:
    """Runs in the fresh process, after its imports."""
    from tyllm import runtime

    baseline = status("VmRSS")
    with runtime.load(tree, workers=workers) as session:
        session.generate(list(range(1, 17)), max_new_tokens=8)
        dies = [status("VmHWM", p.pid) for p in getattr(session.workers, "procs", [])]
    if workers == "processes":
        floor = bare_die_peak()
        return {"peak_above_imports_bytes": sum(d - floor for d in dies)}
    return {"peak_above_imports_bytes": status("VmHWM") - baseline}


def tree_bytes(tree: Path) -> tuple[int, int]:
    """(parameter bytes of every die, bytes of one sequence's K and V caches on every die)."""
    buffers = json.loads((tree / "buffer_config.json").read_text())
    params = {tree / g[key] for g in buffers["graphs"]
              for key in ("weights", "constants", "graph_params") if g.get(key)}
    itemsize = {"float32": 4, "float16": 2}
    kv = 0
    for entry in buffers["kv_cache"]:
        shape, dtype = entry["k_cache"]["shape"], entry["k_cache"]["dtype"]
        count = 1
        for n in shape:
            count *= n
        kv += 2 * count * itemsize[dtype]
    return sum(p.stat().st_size for p in params), kv


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
