"""Runs one vLLM engine in its own process and writes its outputs as JSON (used by the tests).

    python vllm_generate.py job.json  # {"engine": {LLM kwargs}, "batches": [[...]], "out": path}

Each batch of requests is one `LLM.generate` call (engines are shared between tests that way);
the outputs are a list per batch.

Each request is {"prompt_token_ids": [...], "sampling": {...SamplingParams kwargs}}, or
{"prompt": text, "images": [png paths], "videos": [[frame png paths]], "sampling": ...}. With
VLLM_TARGET_DEVICE=cpu in the environment this is stock vLLM CPU (platform plugins skipped);
otherwise tyllm's platform plugin routes the engine to the compiled dies. A request with
"abort_after": n is aborted after the engine's n-th step (its batch runs step by step through
the LLMEngine) and has {"aborted": true} as its output. An engine with
disable_log_stats=False also writes vLLM's counter metrics to `out` + ".metrics".
"""

import json
import sys


def logprob_rows(output) -> list | None:
    if output.logprobs is None:
        return None
    return [{str(t): lp.logprob for t, lp in row.items()} for row in output.logprobs]


def prompt_of(request: dict) -> dict:
    if "prompt" not in request:
        return {"prompt_token_ids": request["prompt_token_ids"]}
    from PIL import Image

    def load(paths):
        return [Image.open(p).convert("RGB") for p in paths]

    data = {"image": load(request.get("images", [])),
            "video": [load(frames) for frames in request.get("videos", [])]}
    return {"prompt": request["prompt"], "multi_modal_data": {k: v for k, v in data.items() if v}}


def engine_kwargs(engine: dict) -> dict:
    engine = dict(engine)
    if engine.get("distributed_executor_backend") == "EdgeXExecutor":
        from tyllm.vllm_ext.edgex_executor import EdgeXExecutor

        engine["distributed_executor_backend"] = EdgeXExecutor
    return engine


def result_of(r) -> dict:
    return {"token_ids": list(r.outputs[0].token_ids), "text": r.outputs[0].text,
            "logprobs": logprob_rows(r.outputs[0]), "cached_tokens": r.num_cached_tokens}


def generate(llm, requests: list[dict]) -> list[dict]:
    from vllm import SamplingParams

    if any("abort_after" in r for r in requests):
        return generate_stepwise(llm.llm_engine, requests)
    prompts = [prompt_of(r) for r in requests]
    params = [SamplingParams(**r["sampling"]) for r in requests]
    return [result_of(r) for r in llm.generate(prompts, params, use_tqdm=False)]


def generate_stepwise(engine, requests: list[dict]) -> list[dict]:
    """The requests added together, stepped until all finish, some aborted on the way."""
    from vllm import SamplingParams

    by_id = {f"stepwise-{i}": r for i, r in enumerate(requests)}
    for rid, r in by_id.items():
        engine.add_request(rid, prompt_of(r), SamplingParams(**r["sampling"]))
    finished, step = {}, 0
    while engine.has_unfinished_requests():
        finished |= {o.request_id: o for o in engine.step() if o.finished}
        step += 1
        engine.abort_request([rid for rid, r in by_id.items() if r.get("abort_after") == step])
    return [{"aborted": True} if "abort_after" in r else result_of(finished[rid])
            for rid, r in by_id.items()]


def main(job_path: str) -> None:
    from vllm import LLM

    job = json.loads(open(job_path).read())
    llm = LLM(**engine_kwargs(job["engine"]))
    outputs = [generate(llm, requests) for requests in job["batches"]]
    with open(job["out"], "w") as f:
        json.dump(outputs, f)
    if job["engine"].get("disable_log_stats") is False:  # vLLM's counters, by name
        with open(job["out"] + ".metrics", "w") as f:
            json.dump({m.name: m.value for m in llm.get_metrics() if hasattr(m, "value")}, f)

if __name__ == "__main__":
    main(sys.argv[1])
