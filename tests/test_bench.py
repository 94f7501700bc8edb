"""The benchmark's pieces: onnxruntime on the exported graphs generates what the runtime does,
the roof counts the weight bytes a decode step reads, and the rate arithmetic."""

from pathlib import Path

import numpy as np
import pytest

from tyllm import runtime
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


def test_roof_of_a_tied_model_reads_every_checkpoint_weight_once(tree, checkpoint_factory):
    """Tied: the table is read whole as the LM head plus one row as the embedding: the
    checkpoint's own tensor bytes (HF stores the tied table once) plus one row."""
    from safetensors.torch import load_file

    ckpt = checkpoint_factory("qwen3", tie_word_embeddings=True)
    tensors = load_file(ckpt / "model.safetensors")
    row = tensors["model.embed_tokens.weight"][0].numel() * 4
    assert decode_weight_bytes(Tree(tree)) == sum(t.numel() * 4 for t in tensors.values()) + row


def test_decode_rate_excludes_the_first_token():
    assert decode_rate(first_s=0.5, total_s=2.5, new_tokens=5) == 2.0
