"""The benchmark's pieces: onnxruntime on the exported graphs generates what the runtime does,
the roof counts the weight bytes a decode step reads, and the rate arithmetic."""

import json
import os
import subprocess
import sys
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
    """Tied: the table is the LM head and the embedding at once, stored and read once: the
    bytes of the checkpoint's distinct tensors (random init repeats its all-ones norms)."""
    from safetensors.torch import load_file

    ckpt = checkpoint_factory("qwen3", tie_word_embeddings=True)
    distinct: list = []
    for t in load_file(ckpt / "model.safetensors").values():
        if not any(t.shape == d.shape and bool((t == d).all()) for d in distinct):
            distinct.append(t)
    assert decode_weight_bytes(Tree(tree)) == sum(t.numel() * 4 for t in distinct)


def test_tied_table_is_stored_once(tree):
    """One die holds the whole tied table: its tokens are looked up in the LM head itself."""
    from tyllm.artifacts.params import load_params

    weights = load_params(tree / "batch_1" / "common_die0.params")
    assert "embed_tokens" not in weights
    assert (tree / "batch_1" / "common_die0.params").stat().st_size < 1.1 * sum(
        t.numel() * 4 for t in weights.values())


def test_decode_rate_excludes_the_first_token():
    assert decode_rate(first_s=0.5, total_s=2.5, new_tokens=5) == 2.0


@pytest.mark.parametrize("dies", [1, 2])
def test_tied_table_is_read_once_into_the_step(checkpoint_factory, dies):
    """A compile holds the tied table once: one die looks its tokens up in the LM head (no
    embedding of its own); on several dies the LM head slice views the embedding's memory."""
    import torch

    from tyllm.compile.llm import Checkpoint
    from tyllm.models.loading import build_die_step
    from tyllm.shard.plan import plan_dies

    ckpt = Checkpoint(checkpoint_factory("qwen3", tie_word_embeddings=True))
    plan = plan_dies(ckpt.dims, dies, 1)[-1]
    step = build_die_step(ckpt.arch, ckpt.config, plan, ckpt.reader, max_kv=16,
                          embedding_as_input=False, dtype=torch.float32)
    head, table = step.lm_head, step.embed_tokens
    if dies == 1:
        assert step.tied_head and table is None
        return
    assert head.untyped_storage().data_ptr() == table.untyped_storage().data_ptr()
    assert torch.equal(head, table[plan.vocab.start:plan.vocab.stop])


def test_prompts_repeat_the_benchmark_prompt_to_each_length():
    from tyllm.bench.prefill import prompt_of

    assert prompt_of(5, [1, 2]) == [1, 2, 1, 2, 1]
    assert prompt_of(1, [7, 8, 9]) == [7]


def test_ttft_and_decode_at_history_give_a_time_per_length(tree):
    from tyllm.bench.prefill import decode_at_history, ttft_tree

    ttft = ttft_tree(tree, [3, 9], [5, 6, 7])
    assert set(ttft) == {3, 9} and all(t > 0 for t in ttft.values())
    decode = decode_at_history(tree, [4, 20], [5, 6, 7], tokens=2)
    assert set(decode) == {4, 20} and all(ms > 0 for ms in decode.values())


def test_prefill_ratios_compare_histories_and_engines():
    from tyllm.bench.report import prefill_ratios

    prefill = {"decode_ms_at_history": {"tyllm-1die": {100: 10.0},
                                        "tyllm-1die-kv4096": {100: 11.0, 3000: 22.0}},
               "ttft_s": {"tyllm-1die-prefill": {41: 0.3}, "tyllm-1die-prefill-128": {41: 0.4},
                          "vllm-cpu": {41: 0.2}}}
    ratios = prefill_ratios(prefill, 4096)
    assert ratios["ttft_41_prefill-128_over_vllm-cpu"] == pytest.approx(2.0)
    assert ratios["decode_kv4096_over_short_kv_at_history_100"] == pytest.approx(1.1)
    assert ratios["decode_kv4096_history_3000_over_100"] == pytest.approx(2.0)
    assert ratios["ttft_41_prefill_over_vllm-cpu"] == pytest.approx(1.5)



MATMUL_CHILD = """
import json
from tyllm.bench.matmul import prefill_matmuls
print(json.dumps(prefill_matmuls(64, 128, [16], threads=1)))
"""


def test_prefill_matmul_measures_every_shape_and_keeps_framework_output_in_its_log(tmp_path):
    """In its own process, as the benchmark runs it: torch's warnings reach stderr there."""
    env = dict(os.environ, TYLLM_CACHE=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", MATMUL_CHILD], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    measured = json.loads(done.stdout.splitlines()[-1])
    assert set(measured) == {"attention-16", "gate_up-16", "down-16"}
    assert all(m["tyllm_gflops"] > 0 and m["torch_gflops"] > 0 for m in measured.values())
    assert measured["down-16"]["in"] == 128 and measured["down-16"]["out"] == 64
    assert "Warning" not in done.stderr
    assert (tmp_path / "logs" / "bench-matmul.log").is_file()


def test_format_ratios_put_each_format_against_its_roof_and_stock_vllm():
    from tyllm.bench.formats import format_ratios

    rows = {name: {"fraction_of_roof": f} for name, f in
            (("float32", 0.9), ("float16", 0.8), ("int4", 0.5))}
    rates = {"float32": {1: 50.0, 8: 200.0}, "float16": {1: 60.0, 8: 260.0},
             "int4": {1: 70.0, 8: 300.0}, "vllm-cpu-bf16": {1: 40.0, 8: 250.0},
             "vllm-cpu": {1: 30.0, 8: 150.0}}
    got = format_ratios({"rows": rows, "serving": {"tok_s_by_concurrency": rates}})
    assert got["decode_int4_fraction_of_roof"] == 0.5
    assert got["serving_float16_8_requests_over_vllm-cpu-bf16"] == pytest.approx(1.04)
    assert got["serving_int4_8_requests_over_vllm-cpu"] == pytest.approx(2.0)
    assert got["serving_int4_1_request_over_float32"] == pytest.approx(1.4)
    assert "serving_float16_8_requests_over_vllm-cpu-bf16" not in format_ratios({"rows": rows})


def test_llama_cpp_rows_are_skipped_with_a_note_without_the_package(monkeypatch, capsys,
                                                                     tmp_path):
    from tyllm.bench import llama_cpp

    monkeypatch.setattr(llama_cpp, "available", lambda: False)
    assert llama_cpp.llama_cpp_engines(tmp_path / "m.gguf", tmp_path, [1, 2], 4, 1) == {}
    assert "llama-cpp-python" in capsys.readouterr().out


def runs_at(*pairs) -> list[dict]:
    return [{"decode_tok_s": rate, "read_bandwidth_gbs": bandwidth, "ttft_s": 0.1}
            for rate, bandwidth in pairs]


def test_each_format_gets_the_roof_of_its_own_bytes():
    from tyllm.bench.formats import with_roofs

    rows = with_roofs({"float32": {"runs": runs_at((45.0, 30.0)), "bytes_per_step": 600_000_000,
                                   "ttft_s": {41: 0.1}},
                       "float16": {"runs": runs_at((90.0, 30.0)), "bytes_per_step": 300_000_000,
                                   "ttft_s": {41: 0.1}},
                       "int4": {"runs": runs_at((100.0, 30.0)), "bytes_per_step": 100_000_000,
                                "ttft_s": {41: 0.1}}})
    assert rows["float16"]["roof_tok_s"] == pytest.approx(100.0)
    assert rows["float16"]["fraction_of_roof"] == pytest.approx(0.9)
    assert rows["int4"]["fraction_of_roof"] == pytest.approx(100.0 / 300.0)
    assert rows["float16"]["bytes_per_s_over_float32"] == pytest.approx(1.0)
    assert rows["int4"]["bytes_per_s_over_float32"] == pytest.approx(10.0 / 27.0)


def test_a_run_is_held_to_the_roof_of_its_own_moment():
    """Each run's fraction is over the bandwidth read right before it; the row's is their
    median, and its ratio to float32 pairs the runs of one round."""
    from tyllm.bench.formats import with_roofs

    rows = with_roofs({
        "float32": {"runs": runs_at((40.0, 30.0), (20.0, 15.0), (44.0, 33.0)),
                    "bytes_per_step": 600_000_000, "ttft_s": {}},
        "float16": {"runs": runs_at((90.0, 30.0), (45.0, 15.0), (60.0, 20.0)),
                    "bytes_per_step": 300_000_000, "ttft_s": {}}})
    assert rows["float16"]["fraction_of_roof"] == pytest.approx(0.9)  # every run at 90 %
    assert rows["float16"]["read_bandwidth_gbs"] == pytest.approx(20.0)
    assert rows["float16"]["decode_tok_s"] == pytest.approx(60.0)
    assert rows["float32"]["fraction_of_roof"] == pytest.approx(0.8)
    assert rows["float16"]["bytes_per_s_over_float32"] == pytest.approx(90.0 / 80.0)


def test_paired_runs_interleave_the_engines_and_read_the_bandwidth_before_each(monkeypatch):
    from tyllm.bench import formats
    from tyllm.bench.timing import Speed

    order = []
    monkeypatch.setattr(formats, "read_bandwidth_gbs", lambda threads: order.append("read") or 1)

    def engine(name):
        return lambda: order.append(name) or Speed(name, 0.1, 10.0, 4)

    runs = formats.paired_runs({"a": engine("a"), "b": engine("b")}, rounds=2, threads=1)
    assert order == ["read", "a", "read", "b", "read", "a", "read", "b"]
    assert [r["decode_tok_s"] for r in runs["a"]] == [10.0, 10.0]
