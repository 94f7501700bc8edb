"""KV windows: one capture per M, one library per (M, window); a step uses the smallest window
holding its history, and greedy tokens stay HF's when the history crosses a window boundary
mid-decode and mid-prefill, at 1 and N dies, threads and processes."""

import json

import pytest
from models import hf_greedy

from tyllm import runtime
from tyllm.artifacts.windows import default_windows, kv_windows, window_for
from tyllm.build_util import build_and_compile_llm
from tyllm.errors import TyllmError
from tyllm.tools.verify import verify_tree

WINDOWS = [8, 16]  # with max_kv 48: graphs for 8, 16 and 48 positions
PROMPT = list(range(3, 17))  # 14 tokens: chunks of 4 start at 0, 4, 8, 12 -> windows 8, 8, 8, 16


def test_default_ladder_grows_by_four_and_ends_at_max_kv():
    assert default_windows(4096) == [256, 1024, 4096]
    assert default_windows(1024) == [256, 1024]
    assert default_windows(8192) == [256, 1024, 4096, 8192]
    assert default_windows(200) == [200]


def test_requested_windows_always_include_max_kv():
    assert kv_windows(64, [16, 8]) == [8, 16, 64]
    assert kv_windows(64, [64]) == [64]


@pytest.mark.parametrize("bad", [[0], [128], [1.5], [True]])
def test_bad_windows_are_refused_with_the_fix(bad):
    with pytest.raises(TyllmError, match=r"kv_windows .* must be integers from 2"):
        kv_windows(64, bad)


def test_a_step_takes_the_smallest_window_holding_its_history():
    assert [window_for(s, [8, 16, 48]) for s in (0, 8, 9, 16, 17, 47)] == [8, 8, 16, 16, 48, 48]


@pytest.fixture(scope="module")
def window_tree(checkpoint_factory, tmp_path_factory):
    ckpt = checkpoint_factory("qwen3")
    out = tmp_path_factory.mktemp("windows") / "2die"
    build_and_compile_llm(ckpt, out, max_kv_cache_size=48, seq_len_list=[1, 4], dev_count=2,
                          kv_windows=WINDOWS, progress=False)
    return ckpt, out


def test_tree_records_one_library_per_window(window_tree):
    _, tree = window_tree
    config = json.loads((tree / "config.json").read_text())
    assert config["kv_windows"] == [8, 16, 48]
    graphs = json.loads((tree / "buffer_config.json").read_text())["graphs"]
    die0 = {(g["seq_len"], g["window"]): g for g in graphs if g["die"] == 0}
    assert set(die0) == {(m, w) for m in (1, 4) for w in (8, 16, 48)}
    assert die0[1, 48]["library"] == "batch_1/seqlen_1/llm_decode_die0.so"  # the seed's name
    assert die0[4, 8]["library"] == "batch_1/seqlen_4/llm_prefill_kv8_die0.so"
    mask = next(t for t in die0[4, 8]["inputs"] if t["name"] == "history_mask")
    assert mask == {"name": "history_mask", "shape": [8], "dtype": "bool"}
    assert len({g["weights"] for g in die0.values()}) == 1  # weights stored once per die
    assert len({g["onnx"] for g in die0.values()}) == 2  # one twin per M


def test_every_window_matches_its_onnx_twin(window_tree):
    checks = verify_tree(window_tree[1])
    assert len(checks) == 12 and all(c.ok for c in checks)


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_greedy_tokens_equal_hf_across_window_boundaries(window_tree, workers):
    ckpt, tree = window_tree
    with runtime.load(tree, workers=workers) as session:
        # decode crosses 16 (and then uses the 48 window); the 14-token prefill starts a chunk
        # past 8, so it changes window mid-prefill
        assert session.generate(PROMPT, max_new_tokens=30) == hf_greedy(ckpt, PROMPT, 30)
        long = list(range(5, 27))  # 22 tokens: prefill crosses both 8 and 16
        assert session.generate(long, max_new_tokens=4) == hf_greedy(ckpt, long, 4)


def test_a_cache_too_small_for_a_ladder_has_one_window():
    with pytest.raises(TyllmError, match="has one window"):
        kv_windows(3, [2])


@pytest.mark.parametrize("max_kv, windows", [(2, None), (4, [2])])
def test_the_smallest_caches_compile_and_match_hf(max_kv, windows, checkpoint_factory, tmp_path):
    ckpt = checkpoint_factory("qwen3")
    tree = build_and_compile_llm(ckpt, tmp_path / "1die", max_kv_cache_size=max_kv,
                                 seq_len_list=[1], kv_windows=windows, progress=False)
    with runtime.load(tree) as session:
        assert session.generate([7], max_kv, stop_at_eos=False) == hf_greedy(ckpt, [7], max_kv)
