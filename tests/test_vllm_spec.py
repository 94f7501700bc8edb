"""Speculative decoding through vLLM on the dies: speculative_config's n-gram or draft-model
drafts are verified in the tree's verify graphs and accepted by vLLM's rejection sampler;
greedy outputs equal those without speculation, and vLLM's spec-decode metrics count what was
drafted."""

import json
from pathlib import Path

import pytest
from models import SPECULATIVE_TOKENS
from vllm_jobs import engine, request, run_batches

pytestmark = pytest.mark.slow
K = SPECULATIVE_TOKENS
PASSAGE = [17, 40, 93, 5, 61, 122, 8, 77, 200, 31, 64, 9, 150, 42, 88, 19]
COPY = [3, *PASSAGE, 4, *PASSAGE, 4, *PASSAGE[:3]]
NGRAM = {"method": "ngram", "num_speculative_tokens": K, "prompt_lookup_min": 2,
         "prompt_lookup_max": 4}


@pytest.fixture(scope="module")
def tree(spec_tree) -> tuple[Path, Path]:
    return spec_tree  # (checkpoint, 2-die tree with verify graphs for K tokens): conftest.py


def batches() -> list[list[dict]]:
    """One request alone (speculated), then two at once (decoded in batches: speculation is
    off under load), then a seeded sampled request."""
    greedy = dict(max_tokens=24, ignore_eos=True)
    return [[request(COPY, **greedy)],
            [request(COPY[::-1], **greedy), request([9, *COPY], **greedy)],
            [request(COPY, max_tokens=12, ignore_eos=True, temperature=0.8, seed=3)]]


def run(tree, folder: Path, workers: str, speculative: dict | None,
        jobs: list[list[dict]] | None = None) -> tuple[list, dict]:
    source, path = tree
    options = {"tyllm": {"artifacts_path": str(path), "workers": workers}}
    extra = {"speculative_config": speculative} if speculative else {}
    kwargs = engine(source, 2, 128, chunked=False, additional_config=options,
                    disable_log_stats=False, **extra) | {"max_num_seqs": 2}
    outputs = run_batches(folder, kwargs, jobs or batches())
    return outputs, json.loads((folder / "out.json.metrics").read_text())


@pytest.fixture(scope="module")
def plain(tree) -> list[list[int]]:
    """The greedy requests' tokens without speculation, from the tree's own session (the vLLM
    engine gives the same: tests/test_vllm_parity.py)."""
    from tyllm import runtime

    with runtime.load(tree[1]) as session:
        return [session.generate(r["prompt_token_ids"], r["sampling"]["max_tokens"],
                                 stop_at_eos=False) for batch in batches()[:2] for r in batch]


def test_ngram_speculation_gives_the_same_greedy_tokens(tree, plain, tmp_path):
    """Threads only: the verify calls go through the same die calls as Session.verify_rows,
    which tests/test_speculate.py runs on both worker kinds."""
    outputs, metrics = run(tree, tmp_path, "threads", NGRAM)
    assert [o["token_ids"] for o in outputs[0] + outputs[1]] == plain
    assert len(outputs[2][0]["token_ids"]) == 12
    assert metrics["vllm:spec_decode_num_drafts"] > 0
    assert 0 < metrics["vllm:spec_decode_num_accepted_tokens"] <= \
        metrics["vllm:spec_decode_num_draft_tokens"]


def test_the_target_as_its_own_draft_model_has_every_draft_accepted(tree, plain, tmp_path):
    """The draft is the target's compiled tree itself, named through its served folder, on
    processes: each draft is what the target would say, so vLLM accepts all of them (greedy
    requests only: a sampled one accepts a draft with the target's probability of it)."""
    from tyllm.vllm_ext.tree_model import draft_config

    outputs, metrics = run(tree, tmp_path, "processes", draft_config(tree[1], K), batches()[:2])
    assert [o["token_ids"] for o in outputs[0] + outputs[1]] == plain
    assert metrics["vllm:spec_decode_num_draft_tokens"] > 0
    assert metrics["vllm:spec_decode_num_accepted_tokens"] == \
        metrics["vllm:spec_decode_num_draft_tokens"]


def test_a_random_draft_checkpoint_is_compiled_at_engine_start(tree, plain, checkpoint_factory,
                                                                 spec_draft, tmp_path):
    """Another random model of the same vocabulary, given as a checkpoint, compiled as its own
    1-die tree when the engine starts (its programs from the cache spec_draft filled): nearly
    every draft is rejected, the tokens stay."""
    draft_path = tmp_path / "draft" / "1die"
    draft = {"method": "draft_model", "model": str(checkpoint_factory("qwen3", seed=8)),
             "num_speculative_tokens": K, "draft_tensor_parallel_size": 1}
    source, path = tree
    options = {"tyllm": {"artifacts_path": str(path), "draft_artifacts_path": str(draft_path)}}
    kwargs = engine(source, 2, 128, chunked=False, additional_config=options,
                    disable_log_stats=False, speculative_config=draft) | {"max_num_seqs": 2}
    outputs = run_batches(tmp_path / "run", kwargs, batches()[:1])
    metrics = json.loads((tmp_path / "run" / "out.json.metrics").read_text())
    assert [o["token_ids"] for o in outputs[0]] == plain[:1]
    assert json.loads((draft_path / "config.json").read_text())["dies"] == 1
    assert 0 <= metrics["vllm:spec_decode_num_accepted_tokens"] < \
        metrics["vllm:spec_decode_num_draft_tokens"] / 2


def test_a_tree_without_enough_verify_rows_is_refused(tree):
    from vllm.engine.arg_utils import EngineArgs

    from tyllm.vllm_ext.tree_check import EngineConfigError
    from tyllm.vllm_ext.tree_model import engine_kwargs

    wide = NGRAM | {"num_speculative_tokens": K + 2}
    with pytest.raises(EngineConfigError, match=r"speculative_config.num_speculative_tokens"):
        EngineArgs(**engine_kwargs(tree[1]), dtype="float32",
                   speculative_config=wide).create_engine_config()
    other = {"method": "ngram_gpu", "num_speculative_tokens": K}
    with pytest.raises(EngineConfigError, match="does not run on tyllm's dies"):
        EngineArgs(**engine_kwargs(tree[1]), dtype="float32",
                   speculative_config=other).create_engine_config()


def test_a_draft_that_cannot_follow_the_target_is_refused(tree, checkpoint_factory, tmp_path):
    """Another vocabulary (vLLM's own check), and a compiled draft holding less context than
    the engine (tyllm's)."""
    from vllm.engine.arg_utils import EngineArgs

    from tyllm.errors import TyllmError
    from tyllm.vllm_ext.artifacts import EngineTree, check_draft
    from tyllm.vllm_ext.tree_model import engine_kwargs

    wide_vocab = checkpoint_factory("qwen3", seed=8, vocab_size=320)
    draft = {"method": "draft_model", "model": str(wide_vocab), "num_speculative_tokens": K}
    with pytest.raises(ValueError, match="same vocabulary size"):
        EngineArgs(**engine_kwargs(tree[1]), dtype="float32",
                   speculative_config=draft).create_engine_config()
    short = tmp_path / "short"
    short.mkdir()
    config = json.loads((tree[1] / "config.json").read_text())
    (short / "config.json").write_text(json.dumps(config | {"max_kv_cache_size": 64}))
    want = EngineTree(tree[0], short, 1, 64, (1, 8))
    with pytest.raises(TyllmError, match="holds 64 tokens of context, the engine 128"):
        check_draft(want, 128)


def test_serve_takes_a_compiled_draft_tree_by_its_path(tree):
    """`tyllm serve ... --speculative-config '{"model": DRAFT_TREE, ...}'`: vLLM gets the
    tree's served folder, which names the tree."""
    from tyllm.vllm_ext.serve import served_draft
    from tyllm.vllm_ext.tree_model import served_tree

    config = {"method": "draft_model", "model": str(tree[1]), "num_speculative_tokens": K}
    apart = served_draft(["--port", "8000", "--speculative-config", json.dumps(config)])
    joined = served_draft([f"--speculative_config={json.dumps(config)}"])
    for text in (apart[-1], joined[0].split("=", 1)[1]):
        served = json.loads(text)["model"]
        assert served != str(tree[1]) and served_tree(Path(served)) == str(tree[1].resolve())
    checkpoint = ["--speculative-config", json.dumps(config | {"model": str(tree[0])})]
    assert served_draft(checkpoint) == checkpoint
