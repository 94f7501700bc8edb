"""`tyllm serve TREE` end to end: vLLM's OpenAI server on compiled SmolLM2 dies, openai client.

The server runs the 1-die SmolLM2 tree with max_num_seqs=4, so 16 concurrent requests queue and
reuse freed KV slots. Expected texts come from the same tree through tyllm's runtime (greedy).
"""

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tyllm import runtime
from tyllm.text import decode, encode_prompt

pytestmark = pytest.mark.slow

API_KEY = "tyllm-test-key"
MAX_TOKENS = 12
QUESTION = "What is the capital of France?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(client, server, deadline_s: float = 600) -> None:
    import openai

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if server.poll() is not None:
            raise AssertionError(f"tyllm serve exited with {server.returncode}")
        try:
            client.models.list()
            return
        except openai.APIConnectionError:
            time.sleep(2)
    raise AssertionError("tyllm serve did not become ready")


@pytest.fixture(scope="module")
def served(smollm2_tree, tmp_path_factory):
    """(openai client, served model name, tree) for a running `tyllm serve` process."""
    import openai

    tree = smollm2_tree(1)
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "tyllm.cli", "serve", str(tree), "--host", "127.0.0.1",
         "--port", str(port), "--api-key", API_KEY, "--max-num-seqs", "4",
         "--gpu-memory-utilization", "0.1"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1"))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY,
                           max_retries=0, timeout=300)
    try:
        wait_ready(client, server)
        yield client, str(tree), tree
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def offline(served):
    """Greedy text for a chat question and for raw prompts, from the runtime directly (the raw
    ones decoded together: generate_batch gives each prompt's generate tokens)."""
    _, _, tree = served
    with runtime.load(tree) as session:
        chat = decode(tree, session.generate(encode_prompt(tree, QUESTION), MAX_TOKENS))
        ids = [encode_prompt(tree, p, chat=False) for p in raw_prompts()]
        raw = {p: decode(tree, out) for p, out in zip(raw_prompts(), session.generate_batch(
            ids, MAX_TOKENS), strict=True)}
    return chat, raw


def raw_prompts() -> list[str]:
    return [f"Item {i}: the number after {i} is" for i in range(16)]


def chat(client, model, stream=False):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], temperature=0,
        max_tokens=MAX_TOKENS, stream=stream)


def test_models_lists_the_tree(served):
    client, model, _ = served
    assert [m.id for m in client.models.list().data] == [model]


def test_chat_completion_equals_offline(served, offline):
    client, model, _ = served
    assert chat(client, model).choices[0].message.content == offline[0]


def test_streaming_chat_equals_offline(served, offline):
    client, model, _ = served
    chunks = [c.choices[0].delta.content or "" for c in chat(client, model, stream=True)
              if c.choices]
    assert len(chunks) > 1
    assert "".join(chunks) == offline[0]


def test_sixteen_concurrent_completions(served, offline):
    client, model, _ = served

    def complete(prompt):
        return client.completions.create(model=model, prompt=prompt, temperature=0,
                                         max_tokens=MAX_TOKENS).choices[0].text

    with ThreadPoolExecutor(16) as pool:
        texts = list(pool.map(complete, raw_prompts()))
    assert texts == [offline[1][p] for p in raw_prompts()]


def test_unsupported_sampling_is_a_400(served):
    import openai

    client, model, _ = served
    with pytest.raises(openai.BadRequestError, match="min_p"):
        client.completions.create(model=model, prompt="Hi", max_tokens=2,
                                  extra_body={"min_p": 0.2})


def test_a_prompt_that_fills_the_context_is_a_400_that_says_so(served):
    """Not vLLM's "max_tokens must be at least 1, got 0" for a request that asked for 5."""
    import openai

    from tyllm.vllm_ext.tree_model import tree_config

    client, model, tree = served
    size = tree_config(tree)["max_kv_cache_size"]
    with pytest.raises(openai.BadRequestError, match=f"The prompt is {size} tokens long and "
                                                     f"fills the whole context of {size} tokens"):
        client.completions.create(model=model, prompt=[7] * size, max_tokens=5)


def test_wrong_api_key_is_refused(served):
    import openai

    client = served[0]
    with pytest.raises(openai.AuthenticationError):
        client.with_options(api_key="wrong").models.list()


def test_eval_scores_the_served_model_like_the_local_one(served, smollm2_path, tmp_path):
    """`tyllm eval --api`: the served fp32 tree's greedy next tokens are the float model's."""
    import json

    from tyllm.cli import main

    client, model, _ = served
    out = tmp_path / "scores.json"
    assert main(["eval", str(smollm2_path), "--api", str(client.base_url), "--api-model", model,
                 "--api-key", API_KEY, "--blocks", "2", "--block-len", "64",
                 "--probe-stride", "8", "--json", str(out)]) == 0
    local, remote = json.loads(out.read_text())
    assert remote["name"].startswith(f"served {model}") and remote["perplexity"] is None
    assert remote["probes"] == local["probes"] == 14
    assert abs(remote["next_token_accuracy"] - local["next_token_accuracy"]) <= 1 / 14
    assert 0 < local["next_token_accuracy"] < 1
