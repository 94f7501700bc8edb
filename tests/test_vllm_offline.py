"""vLLM's offline `LLM.generate` on compiled SmolLM2 dies: greedy tokens equal HF transformers'.

One engine for the module: it compiles the tree on start (no tree at artifacts_path yet), then
serves four prompts at once, one static KV slot each.
"""

import pytest
import torch
from models import greedy, load_hf

from tyllm.artifacts.documents import read_json

PROMPTS = ["The capital of France is", "def fibonacci(n):",
           "Once upon a time, in a land far away,", "Water boils at"]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def vllm_outputs(smollm2_path, tmp_path_factory):
    from vllm import LLM, SamplingParams

    from tyllm.vllm_ext.edgex_executor import EdgeXExecutor

    tree = tmp_path_factory.mktemp("vllm") / "1die"
    llm = LLM(model=str(smollm2_path), tensor_parallel_size=1, max_model_len=512, max_num_seqs=4,
              distributed_executor_backend=EdgeXExecutor,
              worker_cls="tyllm.vllm_ext.edgex_executor.EdgeXWorker", gpu_memory_utilization=0.1,
              additional_config={"tyllm": {"artifacts_path": str(tree), "seq_len_list": [1, 8]}})
    outputs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=MAX_TOKENS))
    del llm
    return tree, outputs


@pytest.mark.slow
def test_engine_compiled_the_tree(vllm_outputs):
    tree, _ = vllm_outputs
    config = read_json(tree / "config.json", "config")
    assert (config["dies"], config["max_kv_cache_size"]) == (1, 512)
    assert config["seq_len_list"] == [1, 8]


@pytest.mark.slow
def test_greedy_tokens_equal_hf(vllm_outputs, smollm2_path):
    _, outputs = vllm_outputs
    model = load_hf(smollm2_path)
    for output in outputs:
        expected = greedy(model, list(output.prompt_token_ids), MAX_TOKENS)
        assert list(output.outputs[0].token_ids) == expected, output.prompt


class CountingSession:
    """Logits that pick token (last position + 1): easy to predict; records each call."""

    def __init__(self):
        self.calls = []

    def extend(self, tokens, start, slot):
        self.calls.append((list(tokens), start, slot))
        return torch.nn.functional.one_hot(torch.tensor(start + len(tokens)), 100).float()


def scheduled(new=(), cached=(), computed=(), counts=None, finished=()):
    from types import SimpleNamespace

    cached_reqs = SimpleNamespace(req_ids=list(cached), resumed_req_ids=set(), all_token_ids={},
                                  num_computed_tokens=list(computed))
    return SimpleNamespace(scheduled_new_reqs=list(new), scheduled_cached_reqs=cached_reqs,
                           num_scheduled_tokens=counts, finished_req_ids=set(finished),
                           preempted_req_ids=None, scheduled_spec_decode_tokens={})


def new_request(req_id, prompt):
    from types import SimpleNamespace

    params = SimpleNamespace(temperature=0, logprobs=None, prompt_logprobs=None)
    return SimpleNamespace(req_id=req_id, prompt_token_ids=prompt, num_computed_tokens=0,
                           sampling_params=params)


def test_slot_runner_chunks_prefill_and_frees_slots():
    from tyllm.vllm_ext.runner import SlotRunner

    session = CountingSession()
    runner = SlotRunner(session, num_slots=2)
    first = runner.execute(scheduled(new=[new_request("a", [5, 6, 7]), new_request("b", [9])],
                                     counts={"a": 2, "b": 1}))
    assert first.sampled_token_ids == [[], [1]]  # "a" is mid-prompt, "b" samples
    second = runner.execute(scheduled(cached=["a", "b"], computed=[2, 1], counts={"a": 1, "b": 1}))
    assert second.sampled_token_ids == [[3], [2]]
    assert session.calls[2:] == [([7], 2, 0), ([1], 1, 1)]
    runner.execute(scheduled(finished=["a"], counts={}))
    assert runner.free == [0]
