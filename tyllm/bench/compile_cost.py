"""Compile time (per graph and total) and peak host memory of a compile, in a fresh process.

Peak RSS is the child's high-water mark (VmHWM) minus its RSS right after importing tyllm, torch
and the default backend (its compiler: TVM), so it counts what compiling holds, not the
libraries.
"""

import json
import subprocess
import sys
from pathlib import Path

from tyllm.artifacts import layout

CHILD = """
import json, sys, time
from tyllm.build_util import build_and_compile_llm
import torch  # noqa: F401  (imported before the baseline is read, as is the backend)
from tyllm.backends import DEFAULT, get_backend
get_backend(DEFAULT)

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

job = json.loads(sys.argv[1])
baseline = status("VmRSS")
start = time.perf_counter()
build_and_compile_llm(job["model"], job["out"], max_kv_cache_size=job["max_kv"],
                      seq_len_list=job["seq_lens"], dev_count=job["dies"],
                      num_threads=job["threads"], batch_size_list=job["batch_sizes"],
                      kv_windows=job["kv_windows"], dtype=job["dtype"], progress=False,
                      use_cache=False, speculative_tokens=job["speculative_tokens"])
print("RESULT" + json.dumps({"seconds": time.perf_counter() - start,
                             "baseline_rss": baseline, "peak_rss": status("VmHWM")}))
"""


def compile_cost(model: Path, out: Path, dies: int, max_kv: int, seq_lens: list[int],
                 threads: int, batch_sizes=(1,), kv_windows=None, dtype="float32",
                 speculative_tokens: int = 0) -> dict:
    """`kv_windows`: None for the default ladder (tyllm/artifacts/windows.py)."""
    job = {"model": str(model), "out": str(out), "dies": dies, "max_kv": max_kv,
           "seq_lens": seq_lens, "threads": threads, "batch_sizes": list(batch_sizes),
           "kv_windows": kv_windows, "dtype": dtype, "speculative_tokens": speculative_tokens}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], capture_output=True,
                          text=True, timeout=3600)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"compile failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT"):])
    report = json.loads((out / "compile_report.json").read_text())
    return {"dies": dies, "total_s": result["seconds"],
            "peak_rss_above_imports_bytes": result["peak_rss"] - result["baseline_rss"],
            "graphs": report["graphs"], "workers": report.get("workers", []),
            "die0_weight_bytes": (out / layout.weights_file(0)).stat().st_size}
