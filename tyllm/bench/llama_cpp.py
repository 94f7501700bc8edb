"""llama.cpp as an anchor row of the format table: the CPU engine whose 4-bit kernels are built to
stream quantized weights at memory speed, on the same SmolLM2 weights (the packaged GGUF is
Q4_1; its 16-bit row is llama.cpp's own F16 re-quantization of that file). Optional: measured
when the `llama-cpp-python` package is installed, otherwise skipped with a note; never a
dependency of tyllm. Runs in a child process, as stock vLLM does, so its thread pool does not
share the cores with what the benchmark measures next."""

import importlib.util
from pathlib import Path

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
    first = sorted(run(1) for _ in range(3))[1]  # medians of 3, as tyllm's rows
    total = sorted(run(n) for _ in range(3))[1]
    print("RESULT" + json.dumps({"first": first, "total": total}))
"""

# row name -> (file name written next to the packaged GGUF's copy, llama.cpp ftype or None)
ROWS = {"llama.cpp Q4_1": (None, None), "llama.cpp F16": ("f16.gguf", "LLAMA_FTYPE_MOSTLY_F16")}


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def llama_cpp_rows(gguf: Path, work: Path, prompt: list[int], new_tokens: int,
                   threads: int) -> dict[str, Speed]:
    """Decode of each ROWS entry (empty, with MISSING printed, without llama-cpp-python)."""
    if not available():
        print(MISSING, flush=True)
        return {}
    speeds = {}
    for name, (file, ftype) in ROWS.items():
        model = work / f"smollm2-{file}" if file else gguf
        job = {"source": str(gguf), "model": str(model), "ftype": ftype, "threads": threads,
               "prompt": prompt, "new_tokens": new_tokens}
        times = run_child(CHILD, job, threads)
        first, total = times["first"], times["total"]
        speeds[name] = Speed(name, first, (new_tokens - 1) / max(total - first, 1e-9),
                             new_tokens)
    return speeds


def anchor_rows(work: Path, prompt: list[int], new_tokens: int, threads: int) -> dict:
    """The format table's llama.cpp rows on the packaged SmolLM2 GGUF; bytes per step are the
    model file's size (every tensor but one embedding row is read each step)."""
    from tyllm.tools.smollm2 import GGUF_FILE, gguf_folder

    gguf = gguf_folder() / GGUF_FILE
    rows = {}
    for name, speed in llama_cpp_rows(gguf, work, prompt, new_tokens, threads).items():
        file = ROWS[name][0]
        rows[name] = {"decode_tok_s": speed.decode_tok_s,
                      "bytes_per_step": (work / f"smollm2-{file}" if file else gguf).stat().st_size,
                      "ttft_s": {len(prompt): speed.ttft_s}}
    return rows
