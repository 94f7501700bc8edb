"""Serving many users: aggregate decode throughput of `LLM.generate` with 1, 2, 4 and 8 requests
at once (each `new_tokens` greedy tokens, ignore_eos, distinct prompts), for tyllm's engine on a
tree and for stock vLLM CPU, each in its own child process."""

from pathlib import Path

from tyllm.bench.engines import run_child

CONCURRENCY = [1, 2, 4, 8]

CHILD = """
import json, sys, time
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    llm = LLM(**job["engine"])
    n_new = job["new_tokens"]
    params = SamplingParams(temperature=0, max_tokens=n_new, ignore_eos=True)
    warm = SamplingParams(temperature=0, max_tokens=4)
    llm.generate([{"prompt_token_ids": p} for p in job["prompts"]], warm, use_tqdm=False)
    result = {}
    for n in job["concurrency"]:
        start = time.perf_counter()
        llm.generate([{"prompt_token_ids": p} for p in job["prompts"][:n]], params,
                     use_tqdm=False)
        result[n] = n * n_new / (time.perf_counter() - start)
    print("RESULT" + json.dumps(result))
"""


def prompts_for(ids: list[int], count: int) -> list[list[int]]:
    """`count` distinct prompts of the same length (rotations of `ids`): no shared prefix."""
    return [ids[i:] + ids[:i] for i in range(count)]


def engine_job(engine: dict, ids: list[int], new_tokens: int) -> dict:
    return {"engine": engine, "new_tokens": new_tokens, "concurrency": CONCURRENCY,
            "prompts": prompts_for(ids, max(CONCURRENCY))}


def tree_throughput(tree: Path, ids: list[int], new_tokens: int, threads: int) -> dict:
    """tok/s by concurrency of tyllm's vLLM engine serving `tree`."""
    from tyllm.vllm_ext.tree_model import engine_kwargs

    engine = engine_kwargs(tree) | {"max_num_seqs": max(CONCURRENCY),
                                    "gpu_memory_utilization": 0.1}
    return keyed(run_child(CHILD, engine_job(engine, ids, new_tokens), threads, False))


def vllm_throughput(model: Path, ids: list[int], new_tokens: int, threads: int, max_len: int,
                    dtype: str = "float32") -> dict:
    """tok/s by concurrency of stock vLLM CPU at `dtype`."""
    engine = {"model": str(model), "dtype": dtype, "max_model_len": max_len,
              "max_num_seqs": max(CONCURRENCY), "gpu_memory_utilization": 0.5}
    return keyed(run_child(CHILD, engine_job(engine, ids, new_tokens), threads))


def kv_bytes_per_slot(tree: Path) -> int:
    """K and V cache bytes one sequence holds, over all dies (a batch of B holds B slots)."""
    from math import prod

    from tyllm.dtypes import DTYPES
    from tyllm.runtime.tree import Tree

    opened = Tree(tree)
    caches = [opened.kv_cache_for(d)["k_cache"] for d in range(opened.dies)]
    return sum(2 * prod(k["shape"]) * DTYPES[k["dtype"]].itemsize for k in caches)


def keyed(result: dict) -> dict:
    return {int(n): rate for n, rate in result.items()}


def int4_checkpoint(model: Path, work: Path, group_size: int = 64) -> Path:
    """`model` quantized with AWQ W4A16 (calibrated on the default offline texts) and converted
    to tyllm's int4 layout, for the int4 serving rows; both kept in `work` and reused."""
    awq, int4 = work / "awq-checkpoint", work / "int4-checkpoint"
    if (int4 / "config.json").is_file():
        return int4
    from tyllm.quant.convert import convert_checkpoint

    if not (awq / "config.json").is_file():
        quantize_awq(model, awq, group_size)
    return convert_checkpoint(awq, int4, "awq")


def quantize_awq(model: Path, out: Path, group_size: int) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tyllm.quant import get_awq_config, get_dataloader, quantize_model, save_quantized_model
    from tyllm.quant.data import load_texts

    tokenizer = AutoTokenizer.from_pretrained(model)
    calibration = get_dataloader(load_texts(None), tokenizer, num_max_orig_samples=32,
                                 max_sequence_length=256)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype="float32")
    quantized = quantize_model(hf, get_awq_config(group_size=group_size), calibration, tokenizer)
    return save_quantized_model(quantized, out, tokenizer)
