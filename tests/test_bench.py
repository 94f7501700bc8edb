"""The benchmark's pieces: onnxruntime on the exported graphs generates what the runtime does,
the roof counts the weight bytes a decode step reads, and the rate arithmetic."""

from pathlib import Path

import numpy as np
import pytest

from tyllm import runtime
from tyllm.artifacts.params import load_params
from tyllm.bench.engines import OrtDie
from tyllm.bench.roof import decode_weight_bytes
from tyllm.bench.timing import decode_rate
from tyllm.build_util import build_and_compile_llm
from tyllm.runtime.tree import Tree


@pytest.fixture(scope="module")
def tree(checkpoint_factory, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "1die"
    return Path(build_and_compile_llm(checkpoint_factory("qwen3", tie_word_embeddings=True), out,
                                      max_kv_cache_size=32, seq_len_list=[1, 4], progress=False))


def test_onnxruntime_greedy_equals_the_runtime(tree):
    prompt = [5, 17, 3, 99, 42, 7]
    with runtime.load(tree) as session:
        expected = session.generate(prompt, 8, stop_at_eos=False)
    die = OrtDie(Tree(tree), threads=1)
    logits, got = die.extend(prompt, 0), []
    for i in range(8):
        got.append(int(np.argmax(logits)))
        logits = die.extend([got[-1]], len(prompt) + i)
    assert got == expected


def test_roof_counts_one_embedding_row_unless_tied(tree):
    weights = load_params(next(tree.glob("batch_1/common_die0.params")))
    total = sum(t.numel() * t.element_size() for t in weights.values())
    if "lm_head" in weights:  # untied: the table gives one row per token
        row = weights["embed_tokens"][0]
        total -= weights["embed_tokens"].numel() * 4 - row.numel() * 4
    assert decode_weight_bytes(Tree(tree)) == total


def test_decode_rate_excludes_the_first_token():
    assert decode_rate(first_s=0.5, total_s=2.5, new_tokens=5) == 2.0
