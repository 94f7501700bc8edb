"""Prefix caching: time to first token of requests that share a long system prompt.

One workload, sent one request after another through `LLM.generate` (one token each): a
`SYSTEM_TOKENS`-token system prompt followed by `QUESTIONS` different `QUESTION_TOKENS`-token
questions. With prefix caching on, requests 2 onwards find the system prompt in the cache and
prefill only their question. A second workload puts each question first, so no two prompts share
a block: it shows what caching costs when nothing hits. Each engine (tyllm's on a tree, stock
vLLM CPU on the checkpoint) runs both workloads in a child process of its own, once with prefix
caching on and once off; the figures are the mean TTFT of requests 2 onwards.
"""

from pathlib import Path

from tyllm.bench.engines import run_child

SYSTEM_TOKENS = 1024
QUESTION_TOKENS = 32
QUESTIONS = 8
SYSTEM_TEXT = ("You are a careful assistant for a deployment team. Answer questions about "
               "compiling and serving language models on edge accelerators, cite the relevant "
               "configuration option, and keep every answer short and precise. ")
QUESTION_TEXTS = [
    "Which prefill lengths should I compile for a chat assistant?",
    "How large should the KV cache be for four concurrent users?",
    "Why does decode read every weight once per token?",
    "What does a KV window change in the attention step?",
    "How do I check a quantized tree against the float model?",
    "When does splitting a model over more dies pay off?",
    "What limits the time to first token on a long prompt?",
    "How are batch sizes chosen for a serving tree?",
]

CHILD = """
import json, sys, time
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    llm = LLM(**job["engine"])
    once = SamplingParams(temperature=0, max_tokens=1)
    def ttft(prompt):
        start = time.perf_counter()
        out = llm.generate([{"prompt_token_ids": prompt}], once, use_tqdm=False)[0]
        return time.perf_counter() - start, out.num_cached_tokens or 0, out.outputs[0].token_ids
    def counters():  # vLLM's prefix-cache metrics (its hit rate is hits / queries)
        return {m.name.split(":")[-1]: m.value for m in llm.get_metrics()
                if m.name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits")}
    for prompt in job["warm_up"]:
        ttft(prompt)
    result = {}
    for name, prompts in job["workloads"].items():
        before = counters()
        runs = [ttft(p) for p in prompts]
        after = counters()
        result[name] = {"ttft_s": [r[0] for r in runs], "cached_tokens": [r[1] for r in runs],
                        "tokens": [list(r[2]) for r in runs],
                        "metrics": {k: after[k] - before.get(k, 0) for k in after}}
    print("RESULT" + json.dumps(result))
"""


def fill(ids: list[int], length: int) -> list[int]:
    """`ids` repeated to exactly `length` tokens."""
    return (ids * (length // len(ids) + 1))[:length]


def workloads(model: Path) -> tuple[dict, list[list[int]]]:
    """The shared-prefix and no-hit workloads, and warm-up prompts that share nothing with them
    (two of them share their own system prompt: the warm-up runs the hit path too)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    encode = tokenizer.encode
    system = fill(encode(SYSTEM_TEXT), SYSTEM_TOKENS)
    questions = [fill(encode(" " + q), QUESTION_TOKENS) for q in QUESTION_TEXTS[:QUESTIONS]]
    other = system[::-1]
    warm_up = [other + questions[0], other + questions[1]]
    return {"shared": [system + q for q in questions],
            "no_hit": [q + system for q in questions]}, warm_up


def prefix_cache_run(engine: dict, model: Path, threads: int, stock: bool) -> dict:
    """Both workloads on one engine (`LLM(**engine)`) with prefix caching on and off."""
    loads, warm_up = workloads(model)
    engine = engine | {"disable_log_stats": False}
    return {caching: run_child(CHILD, {"engine": engine | {"enable_prefix_caching": caching},
                                       "workloads": loads, "warm_up": warm_up}, threads, stock)
            for caching in (True, False)}


def tree_engine(tree: Path) -> dict:
    from tyllm.vllm_ext.tree_model import engine_kwargs

    return engine_kwargs(tree) | {"max_num_seqs": 1, "gpu_memory_utilization": 0.1}


def stock_engine(model: Path, max_len: int) -> dict:
    return {"model": str(model), "dtype": "float32", "max_model_len": max_len,
            "max_num_seqs": 1, "gpu_memory_utilization": 0.5}


def summary(runs: dict) -> dict:
    """Mean TTFT of requests 2 onwards per workload, caching on and off, and their ratios; and
    whether caching changed any first token."""
    def mean_after_first(run: dict, name: str) -> float:
        times = run[name]["ttft_s"][1:]
        return sum(times) / len(times)

    on, off = runs[True], runs[False]
    row = {f"{name}_ttft_s_{flag}": mean_after_first(run, name)
           for name in on for flag, run in (("on", on), ("off", off))}
    row["shared_on_over_off"] = row["shared_ttft_s_on"] / row["shared_ttft_s_off"]
    row["no_hit_on_over_off"] = row["no_hit_ttft_s_on"] / row["no_hit_ttft_s_off"]
    row["cached_tokens_shared"] = on["shared"]["cached_tokens"]
    row["cached_tokens_no_hit"] = on["no_hit"]["cached_tokens"]
    row["vllm_hit_rate"] = {name: hit_rate(on[name]["metrics"]) for name in on}
    row["same_tokens"] = all(on[n]["tokens"] == off[n]["tokens"] for n in on)
    return row


def hit_rate(metrics: dict) -> float | None:
    """vLLM's prefix-cache hit rate over a workload: cached tokens over prompt tokens looked up."""
    queries = metrics.get("prefix_cache_queries")
    return metrics["prefix_cache_hits"] / queries if queries else None


def print_row(name: str, row: dict) -> None:
    print(f"prefix cache {name}: shared system prompt, requests 2-{QUESTIONS} mean TTFT "
          f"{row['shared_ttft_s_on'] * 1e3:.0f} ms on / {row['shared_ttft_s_off'] * 1e3:.0f} ms "
          f"off = {row['shared_on_over_off']:.2f}x; no hits "
          f"{row['no_hit_ttft_s_on'] * 1e3:.0f} / {row['no_hit_ttft_s_off'] * 1e3:.0f} ms = "
          f"{row['no_hit_on_over_off']:.2f}x; cached tokens {row['cached_tokens_shared']}; "
          f"vLLM's hit rate {row['vllm_hit_rate']}; same tokens: {row['same_tokens']}",
          flush=True)
