"""Greedy parity with HF transformers for random small Qwen3, Qwen2, Llama (1-4 dies) and Phi-3
(3 dies, processes: every die reads its segments of the fused tensors)."""

from pathlib import Path

import pytest
from models import hf_greedy

from tyllm import runtime
from tyllm.build_util import build_and_compile_llm

pytestmark = pytest.mark.slow

PROMPT = [3, 17, 92, 45, 7, 200, 11, 64, 5, 150, 33, 8, 71, 19, 240, 2, 99, 60, 4, 123]  # 20 > 8


def compile_tree(ckpt, out, dies, **kwargs):
    return build_and_compile_llm(ckpt, out / f"{dies}die", max_kv_cache_size=96,
                                 seq_len_list=[1, 8], dev_count=dies, export_onnx=False,
                                 progress=False, **kwargs)


# every die count on Qwen3, two on each other architecture (their layers differ from Qwen3's,
# not their sharding): 8 trees instead of 12, for the CI's time
LAYOUTS = [("qwen3", 1), ("qwen3", 2), ("qwen3", 3), ("qwen3", 4), ("qwen2", 1), ("qwen2", 3),
           ("llama", 2), ("llama", 4)]


@pytest.mark.parametrize(("arch", "dies"), LAYOUTS, ids=[f"{d}-{a}" for a, d in LAYOUTS])
def test_greedy_tokens_equal_hf(arch, dies, checkpoint_factory, tmp_path):
    ckpt = checkpoint_factory(arch)
    tree = compile_tree(ckpt, tmp_path, dies, embedding_as_input=(dies == 2))
    workers = "processes" if dies == 3 else "threads"
    with runtime.load(tree, workers=workers) as session:
        got = session.generate(PROMPT, max_new_tokens=64)
    assert got == hf_greedy(ckpt, PROMPT, 64)


def test_query_heads_straddling_kv_groups_and_biases(checkpoint_factory, tmp_path):
    # 8 query heads over 2 KV heads on 3 dies: die 1 reads both KV heads unevenly.
    ckpt = checkpoint_factory("llama", seed=1, num_attention_heads=8, num_key_value_heads=2,
                              head_dim=6, attention_bias=True, mlp_bias=True,
                              tie_word_embeddings=True)
    tree = compile_tree(ckpt, tmp_path, 3)
    with runtime.load(tree) as session:
        got = session.generate(PROMPT, max_new_tokens=64)
    assert got == hf_greedy(ckpt, PROMPT, 64)


def test_generation_stops_at_eos_like_hf(checkpoint_factory, tmp_path):
    free_running = hf_greedy(checkpoint_factory("qwen3"), PROMPT, 12)
    eos = free_running[5]
    ckpt = checkpoint_factory("qwen3", eos_token_id=eos)  # same seed: same weights
    reference = hf_greedy(ckpt, PROMPT, 12)
    assert reference[-1] == eos and len(reference) <= 6
    tree = compile_tree(ckpt, tmp_path, 1)
    with runtime.load(tree) as session:
        assert session.generate(PROMPT, max_new_tokens=12) == reference


@pytest.mark.parametrize("dies", [3])
def test_phi3_fused_qkv_and_gate_up_equal_hf(dies, checkpoint_factory, tmp_path):
    """Phi-3 fuses q/k/v and gate/up into one tensor each: every die reads its segments only
    (on 3 dies, 6 query heads over 2 KV heads: KV heads are replicated unevenly)."""
    ckpt = checkpoint_factory("phi3", seed=2)
    tree = compile_tree(ckpt, tmp_path, dies)
    with runtime.load(tree, workers="processes" if dies == 3 else "threads") as session:
        got = session.generate(PROMPT, max_new_tokens=32)
    assert got == hf_greedy(ckpt, PROMPT, 32)


@pytest.mark.parametrize("arch,dies,workers", [("qwen3", 1, "threads"), ("llama", 3, "processes")])
def test_onnx_reference_backend_equals_hf(arch, dies, workers, checkpoint_factory, tmp_path):
    """The second backend through the same compile and runtime paths: each die's graph runs in
    onnxruntime, split at its all-reduces, which the runtime's collective performs; one graph
    file serves every KV window (the history crosses the 32-position window mid-decode)."""
    ckpt = checkpoint_factory(arch)
    tree = compile_tree(ckpt, tmp_path, dies, backend="onnx_reference", kv_windows=(32,))
    decode = sorted(Path(tree).glob("batch_1/seqlen_1/llm_decode*_die0.*"))
    assert [p.name for p in decode] == ["llm_decode_die0.onnx", "llm_decode_kv32_die0.onnx"]
    assert decode[0].stat().st_ino == decode[1].stat().st_ino
    assert not list(Path(tree).rglob("*.so"))
    with runtime.load(tree, workers=workers) as session:
        got = session.generate(PROMPT, max_new_tokens=64)
    assert got == hf_greedy(ckpt, PROMPT, 64)
