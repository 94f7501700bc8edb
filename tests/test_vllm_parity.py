"""`LLM.generate` over compiled dies == HF transformers == stock vLLM CPU, token for token.

Six concurrent greedy prompts on SmolLM2 (1 die threads whole-prompt, 3 dies processes chunked;
against HF and stock vLLM, whose engine and tyllm's 1-die one the sampling test shares) and on a
random Qwen3 (2 dies threads, its tree compiled when the engine starts, with
the batch sizes max_num_seqs asks for; against HF), chunked prefill on (a 16-token budget: long
prompts are split across steps) and off; and one engine with a single KV slot
(max_num_seqs=1), whose first request fills the whole context. Every engine runs in its own process
(tests/vllm_generate.py); engines pick tyllm through the platform plugin, one case through
the explicit executor/worker flags of the issue's example. Stock vLLM runs with
VLLM_TARGET_DEVICE=cpu, which skips platform plugins.
"""

import random

import pytest
from models import greedy, load_hf
from smollm2_requests import GREEDY_TOKENS, QUESTIONS, greedy_prompts
from vllm_jobs import engine, request, run_job

pytestmark = pytest.mark.slow

QWEN3 = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4,
             num_key_value_heads=2, head_dim=32, vocab_size=320)
EXPLICIT_FLAGS = {"distributed_executor_backend": "EdgeXExecutor",
                  "worker_cls": "tyllm.vllm_ext.edgex_executor.EdgeXWorker"}


@pytest.fixture(scope="module")
def models(smollm2_path, checkpoint_factory):
    """name -> (checkpoint, prompt ids, sampling extras): SmolLM2 chat prompts, random ids."""
    rng = random.Random(0)
    qwen3 = checkpoint_factory("qwen3", seed=3, **QWEN3)
    return {
        "smollm2": (smollm2_path, greedy_prompts(smollm2_path), {}),
        "qwen3": (qwen3, [[rng.randrange(1, 320) for _ in range(n)] for n in (3, 7, 12, 20, 33, 5)],
                  {"ignore_eos": True}),
    }


@pytest.fixture(scope="module")
def expected(models, smollm2_engines):
    """name -> (HF greedy tokens, stock vLLM greedy tokens or None) per prompt: stock vLLM
    runs the real checkpoint (an engine start costs ~35 s; the random one is checked
    against HF)."""
    result = {}
    for name, (path, prompts, _) in models.items():
        model = load_hf(path)
        hf = [greedy(model, ids, GREEDY_TOKENS) for ids in prompts]
        stock = smollm2_engines["stock"][0] if name == "smollm2" else None
        result[name] = (hf, stock and [o["token_ids"] for o in stock])
    return result


@pytest.fixture(scope="module")
def qwen3_trees(tmp_path_factory):
    return tmp_path_factory.mktemp("qwen3-trees")


# every model, die layout and worker kind once, chunked prefill on and off (an engine start plus
# its requests takes ~40 s on two cores, so not the full cross product)
CASES = [("smollm2", 1, "threads", False), ("smollm2", 3, "processes", True),
         ("qwen3", 2, "threads", True)]
SHARED = ("smollm2", 1, "threads", False)  # the engine of conftest.py::smollm2_engines


@pytest.mark.parametrize(("name", "dies", "workers", "chunked"), CASES,
                         ids=[f"{n}-{d}die-{w}-{'chunked' if c else 'whole'}"
                              for n, d, w, c in CASES])
def test_greedy_equals_hf_and_stock_vllm(name, dies, workers, chunked, models, expected,
                                         smollm2_tree, smollm2_engines, qwen3_trees, tmp_path):
    path, prompts, extra = models[name]
    tree = smollm2_tree(dies) if name == "smollm2" else qwen3_trees / f"{dies}die"
    options = {"tyllm": {"artifacts_path": str(tree), "workers": workers}}
    flags = EXPLICIT_FLAGS if (name, dies, chunked) == ("smollm2", 3, True) else {}
    outputs = smollm2_engines["tyllm"][0] if (name, dies, workers, chunked) == SHARED else \
        run_job(tmp_path, engine(path, dies, 256, chunked, additional_config=options, **flags),
                [request(ids, max_tokens=GREEDY_TOKENS, **extra) for ids in prompts])
    got = [o["token_ids"] for o in outputs]
    hf, stock = expected[name]
    assert got == hf
    assert stock is None or got == stock
    assert (tree / "manifest.json").is_file()  # compiled at engine start when it was absent


def test_one_sequence_at_a_time_fills_the_whole_context(smollm2_path, smollm2_tree, tmp_path):
    """max_num_seqs=1 (one KV slot: the single-user setting) starts, and serves its requests
    one after another, the first filling the context (250 prompt + 6 new tokens = 256)."""
    from tyllm import runtime
    from tyllm.text import encode_prompt

    tree = smollm2_tree(1)
    prompts = [encode_prompt(smollm2_path, " ".join(QUESTIONS * 12), chat=False)[:250],
               greedy_prompts(smollm2_path)[0]]
    options = {"tyllm": {"artifacts_path": str(tree)}}
    outputs = run_job(tmp_path, engine(smollm2_path, 1, 256, chunked=False, max_num_seqs=1,
                                       additional_config=options),
                      [request(ids, max_tokens=6, ignore_eos=True) for ids in prompts])
    with runtime.load(tree) as session:
        want = [session.generate(ids, 6, stop_at_eos=False) for ids in prompts]
    assert [o["token_ids"] for o in outputs] == want
