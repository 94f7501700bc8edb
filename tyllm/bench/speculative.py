"""Speculative decoding: decode tok/s with n-gram (prompt lookup) proposals against plain decode.

Two tasks, greedy, the same tree and process: an input-grounded one (the prompt holds a
passage and asks for it back with one word changed: most of the answer can be copied) and an
open-ended one (little to copy). Each is decoded plainly and with `Ngram(tokens=k)` for each k
asked; the outputs must be identical. Decode rate = (new tokens - 1) / the time of the decode
after the prompt's prefill (the median of `REPEATS` runs); stock vLLM's = (new tokens - 1) /
(its generate time - its one-token generate time)."""

import os
import statistics
import time
from pathlib import Path

from tyllm.bench.engines import run_child

REPEATS = 3
PASSAGE = (
    "The harbour town woke slowly in winter. Fishing boats rocked against the stone quay while "
    "gulls argued over the remains of the night's catch, and the baker on the corner opened "
    "his shutters to let the smell of fresh bread drift down towards the water. Children ran "
    "past the chandlery on their way to school, their scarves flying behind them, and the old "
    "harbour master stood at his window counting the vessels that had come in before dawn. "
    "Most mornings he found the same twelve boats, painted blue and white, their nets heaped "
    "on the decks in untidy piles. On this particular morning, however, a thirteenth boat lay "
    "at the end of the quay, a narrow green sloop with a torn red sail and no name painted on "
    "her bow. Nobody in the town could remember seeing her arrive. The harbour master put on "
    "his heavy coat, took his lantern from its hook although the sun was already rising, and "
    "walked slowly along the wet stones to look at her more closely. The deck was empty, the "
    "ropes were neatly coiled, and on the tiller someone had tied a small brass bell that rang "
    "softly each time the sloop moved with the tide.")
COPY_TASK = "Copy this text, replacing 'winter' with 'spring':\n\n" + PASSAGE
OPEN_TASK = "Write a short story about a lighthouse keeper who finds a message in a bottle."

CHILD = """
import json, sys
if __name__ == "__main__":
    from tyllm.bench.speculative import rates_here
    job = json.loads(sys.argv[1])
    print("RESULT" + json.dumps(rates_here(**job)))
"""


VLLM_CHILD = """
import json, statistics, sys, time
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    job = json.loads(sys.argv[1])
    def seconds(llm, prompts, n):
        params = SamplingParams(temperature=0, max_tokens=n, ignore_eos=len(prompts) > 1)
        times, out = [], None
        for _ in range(job["repeats"]):
            start = time.perf_counter()
            out = llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                               use_tqdm=False)
            times.append(time.perf_counter() - start)
        return statistics.median(times), [list(o.outputs[0].token_ids) for o in out]
    llm = LLM(**job["engine"])
    result = {}
    for task, prompt in job["prompts"].items():
        seconds(llm, [prompt], 4)  # warm-up
        first, _ = seconds(llm, [prompt], 1)
        total, tokens = seconds(llm, [prompt], job["new_tokens"])
        result[task] = {"decode_s": total - first, "tokens": tokens[0]}
    many = job["concurrent"]
    total, tokens = seconds(llm, many, job["new_tokens"])
    result["concurrent"] = {"tok_s": sum(map(len, tokens)) / total, "tokens": tokens}
    print("RESULT" + json.dumps(result))
"""


def task_prompts(model: Path) -> dict[str, list[int]]:
    from tyllm.text import encode_prompt

    return {"copy": encode_prompt(model, COPY_TASK), "open": encode_prompt(model, OPEN_TASK)}


def speculative_rates(tree: Path, model: Path, new_tokens: int, ks: list[int],
                      lookup: tuple[int, int]) -> dict:
    """Per task: plain decode and n-gram speculation at each k, in a fresh process."""
    job = {"tree": str(tree), "prompts": task_prompts(model), "new_tokens": new_tokens,
           "ks": ks, "lookup": list(lookup)}
    return run_child(CHILD, job, os.cpu_count() or 1, stock=False)


def concurrent_prompts(prompts: dict, count: int) -> list[list[int]]:
    """`count` distinct prompts: the tasks in turn, the i-th with its last token repeated
    i // (number of tasks) more times."""
    tasks = list(prompts.values())
    return [tasks[i % len(tasks)] + tasks[i % len(tasks)][-1:] * (i // len(tasks))
            for i in range(count)]


def engine_rates(engine: dict, model: Path, new_tokens: int, speculative: dict | None,
                 concurrent: int, threads: int, stock: bool) -> dict:
    """An engine's rows, plainly and with `speculative` (vLLM's speculative_config): each
    task alone, and `concurrent` requests at once (aggregate tok/s)."""
    prompts = task_prompts(model)
    job = {"prompts": prompts, "new_tokens": new_tokens, "repeats": REPEATS,
           "concurrent": concurrent_prompts(prompts, concurrent)}
    plain = run_child(VLLM_CHILD, job | {"engine": engine}, threads, stock)
    spec = run_child(VLLM_CHILD, job | {"engine": engine | {"speculative_config": speculative}},
                     threads, stock)
    k = speculative["num_speculative_tokens"]
    rows = {task: {"plain": row(plain[task]["decode_s"], plain[task]["tokens"],
                                plain[task]["tokens"]),
                   f"ngram-k{k}": row(spec[task]["decode_s"], spec[task]["tokens"],
                                      plain[task]["tokens"])}
            for task in prompts}
    rows[f"{concurrent}-requests"] = {
        "plain": {"tok_s": plain["concurrent"]["tok_s"]},
        f"ngram-k{k}": {"tok_s": spec["concurrent"]["tok_s"],
                        "same_as_plain": spec["concurrent"]["tokens"]
                        == plain["concurrent"]["tokens"]}}
    return rows


def ngram_config(k: int, lookup: tuple[int, int]) -> dict:
    return {"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_min": lookup[0],
            "prompt_lookup_max": lookup[1]}


def vllm_rates(model: Path, new_tokens: int, k: int, lookup: tuple[int, int],
               threads: int, concurrent: int = 8) -> dict:
    """Stock vLLM CPU fp32 with its own n-gram speculation."""
    engine = {"model": str(model), "dtype": "float32", "max_model_len": 1024,
              "max_num_seqs": concurrent, "gpu_memory_utilization": 0.5}
    return engine_rates(engine, model, new_tokens, ngram_config(k, lookup), concurrent,
                        threads, stock=True)


def tyllm_vllm_rates(tree: Path, model: Path, new_tokens: int, k: int,
                     lookup: tuple[int, int], threads: int, concurrent: int = 8) -> dict:
    """tyllm's vLLM engine on the tree, its n-gram drafts verified on the dies."""
    from tyllm.vllm_ext.tree_model import engine_kwargs

    engine = engine_kwargs(tree) | {"max_num_seqs": concurrent, "gpu_memory_utilization": 0.1}
    return engine_rates(engine, model, new_tokens, ngram_config(k, lookup), concurrent,
                        threads, stock=False)


def rates_here(tree: str, prompts: dict, new_tokens: int, ks: list[int], lookup: list) -> dict:
    from tyllm import runtime
    from tyllm.speculate import Ngram, SpeculationStats, speculative_greedy

    result = {}
    with runtime.load(Path(tree)) as session:
        session.generate(prompts["open"][:8], 4)  # warm-up
        for task, prompt in prompts.items():
            def plain(logits, p=prompt):
                return session.greedy(logits, len(p), new_tokens)

            def ngram(logits, k, p=prompt, stats=None):
                spec = Ngram(tokens=k, lookup_min=lookup[0], lookup_max=lookup[1])
                return speculative_greedy(session, p, logits, new_tokens, spec, stats=stats)

            seconds, tokens = decode_time(session, prompt, plain)
            rows = {"plain": row(seconds, tokens, tokens)}
            for k in ks:
                stats = SpeculationStats()
                ngram(session.prefill(prompt), k, stats=stats)
                seconds, out = decode_time(session, prompt, lambda x, k=k: ngram(x, k))
                rows[f"ngram-k{k}"] = row(seconds, out, tokens) | {
                    "acceptance_rate": stats.acceptance_rate,
                    "mean_accepted_length": stats.mean_accepted_length,
                    "verify_steps": stats.verify_steps, "decode_steps": stats.decode_steps}
            result[task] = rows
    return result


def decode_time(session, prompt: list[int], decode) -> tuple[float, list[int]]:
    """The median time of `decode(logits)` after the prompt's prefill (not timed), over
    REPEATS runs, and its tokens."""
    times, out = [], []
    for _ in range(REPEATS):
        logits = session.prefill(prompt)
        start = time.perf_counter()
        out = decode(logits)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def row(decode_s: float, tokens: list[int], plain: list[int]) -> dict:
    return {"decode_tok_s": (len(tokens) - 1) / decode_s, "tokens": len(tokens),
            "same_as_plain": tokens == plain}


def best(rows: dict) -> str:
    """The speculative configuration with the highest decode rate."""
    return max((n for n in rows if n != "plain"), key=lambda n: rows[n]["decode_tok_s"])


def print_rates(result: dict) -> None:
    for task, rows in result.items():
        rate = "tok_s" if "tok_s" in rows["plain"] else "decode_tok_s"
        plain = rows["plain"][rate]
        parts = [f"{n} {r[rate]:.1f} tok/s ({r[rate] / plain:.2f}x"
                 + (f", accepted {r['acceptance_rate']:.0%}" if "acceptance_rate" in r else "")
                 + ("" if r.get("same_as_plain", True) else ", DIFFERENT TOKENS") + ")"
                 for n, r in rows.items()]
        print(f"speculative {task}: " + "; ".join(parts), flush=True)
