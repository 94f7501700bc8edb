"""Each engine generates greedily from the same prompt ids; returns a Speed.

The compiled tree and onnxruntime run the same graphs' math (the tree through TVM, onnxruntime
through the exported ONNX twin of the 1-die tree); HF runs transformers eager `generate`; stock
vLLM CPU runs `LLM.generate` in a child process (VLLM_TARGET_DEVICE=cpu skips tyllm's plugin).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tyllm.artifacts.windows import history_mask, window_for
from tyllm.bench.timing import Speed, clock, decode_rate, wait_until_quiet
from tyllm.runtime.logits import greedy_token
from tyllm.runtime.session import plan_chunks


def bench_tree(tree: Path, prompt: list[int], new_tokens: int, workers: str, label: str) -> Speed:
    from tyllm import runtime

    with runtime.load(tree, workers=workers) as session:
        session.generate(prompt[:4], 2, stop_at_eos=False)  # warm-up: page in, spin up pools
        wait_until_quiet()
        start = clock()
        logits = session.extend(prompt, 0, slot=0)
        first = clock() - start
        for i in range(new_tokens - 1):
            logits = session.extend([greedy_token(logits)], len(prompt) + i, slot=0)
        total = clock() - start
    return Speed(label, first, decode_rate(first, total, new_tokens), new_tokens)


def bench_hf(model_path: Path, prompt: list[int], new_tokens: int, threads: int) -> Speed:
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    ids = torch.tensor([prompt])

    def run(n: int) -> float:
        start = clock()
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return clock() - start

    run(2)  # warm-up
    wait_until_quiet()
    first, total = run(1), run(new_tokens)
    return Speed("hf-eager", first, decode_rate(first, total, new_tokens), new_tokens)


class OrtDie:
    """The 1-die tree's ONNX graphs in onnxruntime, with the host holding the KV cache."""

    def __init__(self, tree, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        graphs = tree.graphs_for(0)
        twins = {m: g["onnx"] for (m, _), g in graphs.items()}  # one per M: its window is symbolic
        self.sessions = {m: ort.InferenceSession(str(tree.root / onnx), options,
                                                 providers=["CPUExecutionProvider"])
                         for m, onnx in twins.items()}
        self.windows = tree.windows
        kv = tree.kv_cache_for(0)["k_cache"]
        self.k = np.zeros(kv["shape"], dtype=kv["dtype"])
        self.v = np.zeros_like(self.k)
        self.seq_lens = tree.seq_lens

    def extend(self, tokens: list[int], start: int) -> np.ndarray:
        logits = None
        for offset, valid, m in plan_chunks(len(tokens), self.seq_lens):
            ids = np.array(tokens[offset:offset + valid] + [0] * (m - valid), dtype=np.int64)
            pos = start + offset
            mask = history_mask(pos, window_for(pos, self.windows)).numpy()
            logits, new_k, new_v = self.sessions[m].run(None, {
                "input_ids": ids, "start_pos": np.array([pos]), "last_index": np.array([valid - 1]),
                "k_cache": self.k, "v_cache": self.v, "history_mask": mask})
            self.k[:, :, pos:pos + valid] = new_k[:, :, :valid]
            self.v[:, :, pos:pos + valid] = new_v[:, :, :valid]
        return logits


def bench_ort(tree_path: Path, prompt: list[int], new_tokens: int, threads: int) -> Speed:
    from tyllm.runtime.tree import Tree

    die = OrtDie(Tree(tree_path), threads)
    die.extend(prompt[:4], 0)  # warm-up
    wait_until_quiet()
    start = clock()
    logits = die.extend(prompt, 0)
    first = clock() - start
    for i in range(new_tokens - 1):
        logits = die.extend([int(logits.argmax())], len(prompt) + i)
    total = clock() - start
    return Speed("onnxruntime", first, decode_rate(first, total, new_tokens), new_tokens)


VLLM_CHILD = """
import json, sys, time
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    job = json.loads(sys.argv[1])
    llm = LLM(model=job["model"], dtype="float32", max_model_len=job["max_len"], max_num_seqs=1,
              enable_prefix_caching=False, gpu_memory_utilization=0.1)
    prompt = {"prompt_token_ids": job["prompt"]}
    def run(n):
        start = time.perf_counter()
        llm.generate([prompt], SamplingParams(temperature=0, max_tokens=n, min_tokens=n,
                                              ignore_eos=True), use_tqdm=False)
        return time.perf_counter() - start
    run(2)
    print("RESULT" + json.dumps([run(1), run(job["new_tokens"])]))
"""


def run_child(child: str, job: dict, threads: int, stock: bool = True):
    """Runs `child` (a script printing RESULT<json> of `job`) in a fresh process, with vLLM's
    tyllm plugin off (stock vLLM CPU; `stock=False`: on); returns the JSON."""
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1",
               VLLM_CPU_OMP_THREADS_BIND=f"0-{threads - 1}")
    if stock:
        env["VLLM_TARGET_DEVICE"] = "cpu"
    wait_until_quiet()
    done = subprocess.run([sys.executable, "-c", child, json.dumps(job)], env=env,
                          capture_output=True, text=True, timeout=1800)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT"):])


def bench_vllm(model_path: Path, prompt: list[int], new_tokens: int, threads: int) -> Speed:
    job = {"model": str(model_path), "prompt": prompt, "new_tokens": new_tokens,
           "max_len": max(256, len(prompt) + new_tokens + 8)}
    first, total = run_child(VLLM_CHILD, job, threads)
    return Speed("vllm-cpu", first, decode_rate(first, total, new_tokens), new_tokens)
