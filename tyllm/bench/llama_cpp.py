"""llama.cpp as an anchor row of the format table: the CPU engine whose 4-bit kernels are built to
stream quantized weights at memory speed, on the same SmolLM2 weights (the packaged GGUF is
Q4_1; its 16-bit row is llama.cpp's own F16 re-quantization of that file). Optional: measured
when the `llama-cpp-python` package is installed, otherwise skipped with a note; never a
dependency of tyllm. Runs in a child process, as stock vLLM does, so its thread pool does not
share the cores with what the benchmark measures next."""

import importlib.util
from functools import partial
from pathlib import Path
from statistics import median

from tyllm.bench.engines import run_child
from tyllm.bench.timing import Speed

MISSING = ("llama.cpp rows skipped: the optional `llama-cpp-python` package is not installed "
           "(`pip install llama-cpp-python` builds it from source)")

CHILD = """
import json, sys, time
import llama_cpp
if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    source, model = job["source"], job["model"]
    if source != model:  # llama.cpp's own re-quantization of the packaged file, once
        import os
        if not os.path.exists(model):
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = getattr(llama_cpp, job["ftype"])
            params.allow_requantize = True
            params.nthread = job["threads"]
            if llama_cpp.llama_model_quantize(source.encode(), model.encode(), params) != 0:
                raise SystemExit(f"llama.cpp could not write {model}")
    llm = llama_cpp.Llama(model_path=model, n_ctx=1024, n_threads=job["threads"],
                          n_threads_batch=job["threads"], verbose=False)
    prompt, n = job["prompt"], job["new_tokens"]

    def run(count):
        llm.reset()
        start = time.perf_counter()
        for i, _ in enumerate(llm.generate(prompt, temp=0.0, reset=True)):
            if i + 1 == count:
                break
        return time.perf_counter() - start

    run(2)  # warm-up
    first, total = run(1), run(n)
    print("RESULT" + json.dumps({"first": first, "total": total}))
"""

# row name -> (file name written next to the packaged GGUF's copy, llama.cpp ftype or None)
ROWS = {"llama.cpp Q4_1": (None, None), "llama.cpp F16": ("f16.gguf", "LLAMA_FTYPE_MOSTLY_F16")}


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def llama_cpp_engines(gguf: Path, work: Path, prompt: list[int], new_tokens: int,
                      threads: int) -> dict:
    """Per ROWS entry, a callable measuring one decode run (a Speed) in a child process; none,
    with MISSING printed, without llama-cpp-python."""
    if not available():
        print(MISSING, flush=True)
        return {}
    return {name: partial(llama_cpp_speed, name, {
                "source": str(gguf), "model": str(model_file(gguf, work, name)),
                "ftype": ROWS[name][1], "threads": threads, "prompt": prompt,
                "new_tokens": new_tokens}) for name in ROWS}


def model_file(gguf: Path, work: Path, name: str) -> Path:
    """The GGUF a row runs: the packaged one, or llama.cpp's re-quantization of it in `work`."""
    file = ROWS[name][0]
    return work / f"smollm2-{file}" if file else gguf


def llama_cpp_speed(name: str, job: dict) -> Speed:
    times = run_child(CHILD, job, job["threads"])
    first, total, n = times["first"], times["total"], job["new_tokens"]
    return Speed(name, first, (n - 1) / max(total - first, 1e-9), n)


def anchor_engines(work: Path, prompt: list[int], new_tokens: int, threads: int) -> dict:
    """The format table's llama.cpp engines on the packaged SmolLM2 GGUF."""
    from tyllm.tools.smollm2 import GGUF_FILE, gguf_folder

    return llama_cpp_engines(gguf_folder() / GGUF_FILE, work, prompt, new_tokens, threads)


def anchor_rows(work: Path, runs: dict[str, list[dict]], prompt: list[int]) -> dict:
    """The llama.cpp rows of the format table from their paired runs; bytes per step are the
    model file's size (every tensor but one embedding row is read each step)."""
    from tyllm.tools.smollm2 import GGUF_FILE, gguf_folder

    gguf = gguf_folder() / GGUF_FILE
    return {name: {"runs": runs[name],
                   "bytes_per_step": model_file(gguf, work, name).stat().st_size,
                   "ttft_s": {len(prompt): median(r["ttft_s"] for r in runs[name])}}
            for name in ROWS if name in runs}
