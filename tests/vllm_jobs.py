"""vLLM test helpers: one engine per subprocess (vllm_generate.py), outputs read back as JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

DRIVER = Path(__file__).with_name("vllm_generate.py")


def engine(model, tp: int, max_model_len: int, chunked: bool, **extra) -> dict:
    """LLM(...) kwargs; chunked prefill on means a 16-token budget, so long prompts split."""
    kwargs = dict(model=str(model), tensor_parallel_size=tp, max_model_len=max_model_len,
                  max_num_seqs=6, dtype="float32", gpu_memory_utilization=0.1,
                  enable_chunked_prefill=chunked, enforce_eager=True)
    if chunked:
        kwargs["max_num_batched_tokens"] = 16
    return kwargs | extra


def request(ids: list[int], **sampling) -> dict:
    return {"prompt_token_ids": list(ids), "sampling": {"temperature": 0, **sampling}}


def run_job(tmp: Path, engine_kwargs: dict, requests: list[dict], stock: bool = False) -> list:
    """Outputs of one engine; `stock` runs vLLM's own CPU backend (platform plugins skipped)."""
    return run_batches(tmp, engine_kwargs, [requests], stock)[0]


def run_batches(tmp: Path, engine_kwargs: dict, batches: list[list[dict]],
                stock: bool = False) -> list[list]:
    """Outputs of one engine that runs each batch of requests as one `LLM.generate` call."""
    tmp.mkdir(parents=True, exist_ok=True)
    job, out = tmp / "job.json", tmp / "out.json"
    job.write_text(json.dumps({"engine": engine_kwargs, "batches": batches, "out": str(out)}))
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    if stock:
        env["VLLM_TARGET_DEVICE"] = "cpu"
    done = subprocess.run([sys.executable, str(DRIVER), str(job)], env=env, capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        raise AssertionError(f"engine failed ({done.returncode}):\n{done.stderr[-6000:]}")
    return json.loads(out.read_text())
