"""The SmolLM2 requests of the vLLM parity and sampling tests, which share their engines
(conftest.py::smollm2_engines): chat questions decoded greedily, then sampled requests."""

from vllm_jobs import request

from tyllm.text import encode_prompt

GREEDY_TOKENS = 16
QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.",
             "What is 12 times 12?", "Name three primary colours.",
             "Who wrote Romeo and Juliet?", "Translate 'good morning' into Spanish."]
SAMPLED = [dict(temperature=0.8, top_p=0.9, seed=11), dict(temperature=0.8, top_p=0.9, seed=11),
           dict(temperature=1.0, top_k=5, seed=12), dict(temperature=0, repetition_penalty=1.3),
           dict(temperature=0, logprobs=3), dict(temperature=0, stop=["Paris"])]


def greedy_prompts(path) -> list[list[int]]:
    return [encode_prompt(path, q) for q in QUESTIONS]


def batches(path) -> list[list[dict]]:
    """[the greedy requests, the sampled ones]: one `LLM.generate` call each."""
    france = encode_prompt(path, QUESTIONS[0])
    return [[request(ids, max_tokens=GREEDY_TOKENS) for ids in greedy_prompts(path)],
            [request(france, max_tokens=12, **s) for s in SAMPLED]]
