"""Time to first token at several prompt lengths, and decode cost at several history lengths.

Every engine prefills the same token ids (the benchmark prompt repeated to length n) and returns
the first token; each figure is the median of `REPEATS` runs after a warm-up.
"""

import os
from pathlib import Path

import torch

from tyllm.bench.engines import OrtDie, run_child
from tyllm.bench.timing import median_seconds

REPEATS = 3


def prompt_of(length: int, ids: list[int]) -> list[int]:
    """`ids` repeated to exactly `length` tokens."""
    return (ids * (length // len(ids) + 1))[:length]


TREE_TTFT_CHILD = """
import json, sys
if __name__ == "__main__":
    from tyllm.bench.prefill import ttft_tree_here
    job = json.loads(sys.argv[1])
    print("RESULT" + json.dumps(ttft_tree_here(job["tree"], job["lengths"], job["ids"],
                                               job["workers"])))
"""


def ttft_tree(tree: Path, lengths: list[int], ids: list[int], workers: str = "threads") -> dict:
    """In a fresh process, as stock vLLM's: nothing the benchmark ran before in its own process
    (other trees' thread pools, HF's OpenMP threads) shares the cores a prefill uses. The tree
    runs on the cores its runtime places it on (all of them at 1 die)."""
    job = {"tree": str(tree), "lengths": lengths, "ids": ids, "workers": workers}
    result = run_child(TREE_TTFT_CHILD, job, os.cpu_count() or 1, stock=False)
    return {int(n): t for n, t in result.items()}


def ttft_tree_here(tree: Path, lengths: list[int], ids: list[int], workers: str) -> dict:
    from tyllm import runtime

    with runtime.load(tree, workers=workers) as session:
        return {n: median_seconds(lambda n=n: session.extend(prompt_of(n, ids), 0, slot=0),
                                  REPEATS)
                for n in lengths}


def ttft_hf(model: Path, lengths: list[int], ids: list[int], threads: int) -> dict:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()

    def first_token(n: int) -> None:
        with torch.no_grad():
            hf(torch.tensor([prompt_of(n, ids)])).logits[0, -1].argmax()

    return {n: median_seconds(lambda n=n: first_token(n), REPEATS) for n in lengths}


def ttft_ort(tree: Path, lengths: list[int], ids: list[int], threads: int) -> dict:
    from tyllm.runtime.tree import Tree

    die = OrtDie(Tree(tree), threads)
    return {n: median_seconds(lambda n=n: die.extend(prompt_of(n, ids), 0), REPEATS)
            for n in lengths}


VLLM_TTFT_CHILD = """
import json, statistics, sys, time
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    job = json.loads(sys.argv[1])
    llm = LLM(model=job["model"], dtype=job["dtype"], max_model_len=job["max_len"],
              max_num_seqs=1, enable_prefix_caching=False, gpu_memory_utilization=0.5)
    once = SamplingParams(temperature=0, max_tokens=1)
    def run(prompt):
        start = time.perf_counter()
        llm.generate([{"prompt_token_ids": prompt}], once, use_tqdm=False)
        return time.perf_counter() - start
    result = {}
    for n, prompt in job["prompts"].items():
        run(prompt)
        result[n] = statistics.median(run(prompt) for _ in range(job["repeats"]))
    print("RESULT" + json.dumps(result))
"""


def ttft_vllm(model: Path, lengths: list[int], ids: list[int], threads: int,
              dtype: str = "float32") -> dict:
    """Stock vLLM CPU (tyllm's plugin off) in a child process: `LLM.generate` of one token."""
    job = {"model": str(model), "dtype": dtype, "repeats": REPEATS,
           "max_len": max(lengths) + 16, "prompts": {n: prompt_of(n, ids) for n in lengths}}
    return {int(n): t for n, t in run_child(VLLM_TTFT_CHILD, job, threads).items()}


def decode_at_history(tree: Path, histories: list[int], ids: list[int], tokens: int = 16,
                      workers: str = "threads") -> dict:
    """Milliseconds per decode token after a prompt of each history length (median of 3 runs
    of `tokens` steps)."""
    from tyllm import runtime

    result = {}
    with runtime.load(tree, workers=workers) as session:
        for n in histories:
            logits = session.extend(prompt_of(n, ids), 0, slot=0)
            token = int(torch.argmax(logits))

            def steps(n=n, token=token) -> None:
                for i in range(tokens):
                    session.extend([token], n + i, slot=0)

            result[n] = median_seconds(steps, REPEATS) / tokens * 1e3
    return result
