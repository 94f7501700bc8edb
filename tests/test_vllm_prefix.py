"""vLLM prefix caching on the dies: a request whose prompt starts with blocks an earlier or
concurrent request computed reuses their KV (vLLM's num_cached_tokens says how many), and
greedy outputs are identical with prefix caching on and off."""

from pathlib import Path

import pytest
from vllm_jobs import engine, request, run_batches

pytestmark = pytest.mark.slow
BLOCK = 16
SHARED = list(range(3, 3 + 40))  # 40 tokens: two full blocks and 8 more


@pytest.fixture(scope="module")
def tree(spec_tree) -> tuple[Path, Path]:
    return spec_tree  # a 2-die Qwen3 at batch sizes [1, 2], KV window 32 (conftest.py)


OTHER = list(range(200, 200 + 36))  # a second shared prefix: two full blocks and 4 more


def batches() -> list[list[dict]]:
    """First the shared prompt alone; then, together, prompts whose shared part ends
    mid-block (40 + 5), exactly at a block boundary (32 + 7), and the whole earlier prompt
    but one token; then a 0-hit prompt; then two requests on a new prefix, the first
    aborted while the second (which hit its blocks) runs on; last a request on that prefix
    after the abort."""
    ask = dict(max_tokens=6, ignore_eos=True)
    return [[request([*SHARED, 60, 61, 62], **ask)],
            [request([*SHARED, 70, 71, 72, 73, 74], **ask),
             request([*SHARED[:32], 80, 81, 82, 83, 84, 85, 86], **ask),
             request([*SHARED, 60, 61], **ask)],
            [request([90, 91, 92, *SHARED], **ask)],
            [request([*OTHER, 100, 101], max_tokens=30, ignore_eos=True) | {"abort_after": 3},
             request([*OTHER, 110, 111, 112], **ask)],
            [request([*OTHER, 120], **ask)]]


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
    tokens = [[o.get("token_ids") for o in batch] for batch in on]
    assert tokens == [[o.get("token_ids") for o in batch] for batch in without_caching]
    assert [o["cached_tokens"] for o in on[1]] == [32, 32, 32]
    assert on[2][0]["cached_tokens"] == 0
    assert on[3][0] == {"aborted": True}
    assert [on[3][1]["cached_tokens"], on[4][0]["cached_tokens"]] == [32, 32]
    assert all(not o.get("cached_tokens") for batch in without_caching for o in batch)
