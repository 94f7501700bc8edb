"""End to end on the real SmolLM2-135M-Instruct: compiled trees answer exactly like HF."""

import pytest
from models import hf_greedy

from tyllm import runtime
from tyllm.text import decode, encode_prompt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prompt_ids(smollm2_path):
    return encode_prompt(smollm2_path, "What is the capital of France?")


@pytest.fixture(scope="module")
def hf_answer(smollm2_path, prompt_ids):
    return hf_greedy(smollm2_path, prompt_ids, 64)


@pytest.mark.parametrize(("dies", "workers"), [(1, "threads"), (3, "processes")])
def test_greedy_answer_equals_hf(dies, workers, smollm2_tree, prompt_ids, hf_answer):
    tree = smollm2_tree(dies)
    with runtime.load(tree, workers=workers) as session:
        got = session.generate(prompt_ids, max_new_tokens=64)
    assert got == hf_answer
    assert decode(tree, got).startswith("The capital of France is Paris.")


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_a_multi_die_tree_loads_in_its_own_size(workers, smollm2_tree):
    """Peak RSS of loading and running the 3-die tree (above imports; per bare die process for
    processes) stays within 1.2x its parameters plus one sequence's KV caches."""
    from tyllm.bench.load_memory import load_memory

    measured = load_memory(smollm2_tree(3), workers)
    assert measured["over_params_plus_kv"] <= 1.2, measured
