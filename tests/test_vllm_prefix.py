"""vLLM prefix caching on the dies: a request whose prompt starts with blocks an earlier or
concurrent request computed reuses their KV (vLLM's num_cached_tokens says how many), and
greedy outputs are identical with prefix caching on and off."""

from pathlib import Path

import pytest
from vllm_jobs import engine, request, run_batches

from tyllm.build_util import build_and_compile_llm

pytestmark = pytest.mark.slow
BLOCK = 16
SHARED = list(range(3, 3 + 40))  # 40 tokens: two full blocks and 8 more


@pytest.fixture(scope="module")
def tree(checkpoint_factory, tmp_path_factory) -> tuple[Path, Path]:
    source = checkpoint_factory("qwen3", seed=6)
    out = tmp_path_factory.mktemp("prefix-vllm") / "2die"
    return source, Path(build_and_compile_llm(source, out, max_kv_cache_size=128,
                                              seq_len_list=[1, 8], dev_count=2,
                                              export_onnx=False, progress=False,
                                              kv_windows=(32,), batch_size_list=[1, 2]))


def batches() -> list[list[dict]]:
    """First the shared prompt alone; then, together, prompts whose shared part ends
    mid-block (40 + 5), exactly at a block boundary (32 + 7), and the whole earlier prompt
    but one token; last a 0-hit prompt."""
    ask = dict(max_tokens=6, ignore_eos=True)
    return [[request([*SHARED, 60, 61, 62], **ask)],
            [request([*SHARED, 70, 71, 72, 73, 74], **ask),
             request([*SHARED[:32], 80, 81, 82, 83, 84, 85, 86], **ask),
             request([*SHARED, 60, 61], **ask)],
            [request([90, 91, 92, *SHARED], **ask)]]


def run(tree, workers: str, caching: bool, folder: Path) -> list[list[dict]]:
    source, path = tree
    options = {"tyllm": {"artifacts_path": str(path), "workers": workers}}
    return run_batches(folder, engine(source, 2, 128, chunked=False, additional_config=options,
                                      enable_prefix_caching=caching, block_size=BLOCK),
                       batches())


@pytest.fixture(scope="module")
def without_caching(tree, tmp_path_factory) -> list[list[dict]]:
    """The same requests with prefix caching off (one engine for both worker kinds)."""
    return run(tree, "threads", False, tmp_path_factory.mktemp("no-caching"))


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_prefix_hits_give_the_same_tokens(tree, without_caching, workers, tmp_path):
    on = run(tree, workers, True, tmp_path)
    tokens = [[o["token_ids"] for o in batch] for batch in on]
    assert tokens == [[o["token_ids"] for o in batch] for batch in without_caching]
    assert [o["cached_tokens"] for o in on[1]] == [32, 32, 32]
    assert on[2][0]["cached_tokens"] == 0
    assert all(not o["cached_tokens"] for batch in without_caching for o in batch)
