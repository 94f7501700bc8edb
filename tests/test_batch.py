"""batch_N trees: decode graphs for B sequences per call, each row at its own position with its
own KV slot; `Session.generate_batch` and `decode_rows` equal one-sequence greedy decoding (and
HF's) at 1 and N dies, threads and processes, across KV-window boundaries."""

import json

import pytest
import torch
from models import hf_greedy

from tyllm import runtime
from tyllm.artifacts.windows import history_mask
from tyllm.build_util import build_and_compile_llm
from tyllm.compile.llm import Checkpoint
from tyllm.compile.request import check_batch_sizes
from tyllm.errors import TyllmError
from tyllm.models.decoder import causal_mask
from tyllm.models.loading import build_die_step
from tyllm.runtime.session import batch_calls
from tyllm.shard.plan import plan_dies
from tyllm.tools.verify import verify_tree
from tyllm.vllm_ext.artifacts import engine_batch_sizes

# prompts of different lengths; decoding 12 tokens crosses the KV window 16 for most of them
PROMPTS = [[5, 6, 7], list(range(10, 30)), [1], list(range(40, 48)), list(range(60, 73))]


def test_calls_use_the_smallest_batch_that_holds_the_rows():
    assert batch_calls(3, [1, 4]) == [(0, 3, 4)]
    assert batch_calls(1, [1, 4]) == [(0, 1, 1)]
    assert batch_calls(9, [1, 2, 4]) == [(0, 4, 4), (4, 4, 4), (8, 1, 1)]
    assert batch_calls(6, [1, 4]) == [(0, 4, 4), (4, 2, 4)]
    assert batch_calls(2, [1]) == [(0, 1, 1), (1, 1, 1)]


@pytest.mark.parametrize("bad", [[0], [1, 1], [65], [2.0], 4, []])
def test_bad_batch_sizes_are_refused_with_the_fix(bad):
    with pytest.raises(TyllmError, match=r"batch_size_list .* distinct integers from 1"):
        check_batch_sizes(bad)


def test_an_engine_compiles_batches_that_cover_max_num_seqs():
    assert engine_batch_sizes(1) == (1,)
    assert engine_batch_sizes(6) == (1, 2, 4, 6)
    assert engine_batch_sizes(8) == (1, 2, 4, 8)
    assert engine_batch_sizes(256) == (1, 2, 4, 8, 16)


@pytest.mark.parametrize("rows, valids", [(4, [4, 2, 1]), (1, [1, 1, 1])])
def test_batched_step_rows_equal_one_sequence_steps(checkpoint_factory, rows, valids):
    """The eager step: three sequences (4 rows: one prefilling 4 rows, one 2, one decoding; 1
    row: each decoding, through one attention op per sequence) in one call give each
    sequence's own logits and new K/V rows."""
    ckpt = Checkpoint(checkpoint_factory("qwen3"))
    plan = plan_dies(ckpt.dims, 1, 1)[0]
    step = build_die_step(ckpt.arch, ckpt.config, plan, ckpt.reader, max_kv=64,
                          embedding_as_input=False, dtype=torch.float32)
    step.causal_mask = causal_mask(rows)
    gen = torch.Generator().manual_seed(0)
    caches = [tuple(torch.randn(2, 2, 64, 8, generator=gen) for _ in "kv") for _ in range(3)]
    starts, window = [5, 0, 17], 32
    tokens = [torch.randint(0, 250, (rows,), generator=gen) for _ in range(3)]
    alone = [step(tokens[b], torch.tensor([starts[b]]), torch.tensor([valids[b] - 1]),
                  *caches[b], history_mask(starts[b], window)) for b in range(3)]
    logits, new_k, new_v = step(
        torch.cat(tokens), torch.tensor(starts), torch.tensor([b * rows + v - 1 for b, v in
                                                               enumerate(valids)]),
        *caches[0], torch.stack([history_mask(s, window) for s in starts]),
        *(t for pair in caches[1:] for t in pair))
    for b, (one_logits, one_k, one_v) in enumerate(alone):
        own = slice(b * rows, b * rows + valids[b])
        torch.testing.assert_close(logits[b], one_logits[0])
        torch.testing.assert_close(new_k[:, :, own], one_k[:, :, :valids[b]])
        torch.testing.assert_close(new_v[:, :, own], one_v[:, :, :valids[b]])


@pytest.fixture(scope="module")
def batch_tree(checkpoint_factory, tmp_path_factory):
    ckpt = checkpoint_factory("qwen3")
    out = tmp_path_factory.mktemp("batch") / "2die"
    build_and_compile_llm(ckpt, out, max_kv_cache_size=48, seq_len_list=[1, 4], dev_count=2,
                          kv_windows=[16], batch_size_list=[1, 3], progress=False)
    return ckpt, out


def test_tree_holds_batched_decode_graphs_and_weights_once(batch_tree):
    _, tree = batch_tree
    config = json.loads((tree / "config.json").read_text())
    assert config["batch_sizes"] == [1, 3]
    graphs = json.loads((tree / "buffer_config.json").read_text())["graphs"]
    batched = {(g["die"], g["window"]): g for g in graphs if g["batch"] == 3}
    assert set(batched) == {(d, w) for d in (0, 1) for w in (16, 48)}
    assert batched[1, 48]["library"] == "batch_3/seqlen_1/llm_decode_die1.so"
    assert batched[0, 16]["library"] == "batch_3/seqlen_1/llm_decode_kv16_die0.so"
    assert batched[0, 16]["weights"] == "batch_1/common_die0.params"
    assert not list((tree / "batch_3").rglob("*.params"))  # weights stored once per die
    names = [t["name"] for t in batched[0, 16]["inputs"]]
    assert names[:6] == ["input_ids", "start_pos", "last_index", "k_cache", "v_cache",
                         "history_mask"]
    assert names[6:] == ["k_cache_1", "v_cache_1", "k_cache_2", "v_cache_2"]
    mask = next(t for t in batched[0, 16]["inputs"] if t["name"] == "history_mask")
    assert mask["shape"] == [3, 16]


def test_every_batched_graph_matches_its_onnx_twin(batch_tree):
    checks = verify_tree(batch_tree[1])
    assert len([c for c in checks if c.batch == 3]) == 4
    assert len(checks) == 12 and all(c.ok for c in checks)


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_generate_batch_rows_equal_their_own_greedy_and_hf(batch_tree, workers):
    ckpt, tree = batch_tree
    with runtime.load(tree, workers=workers) as session:
        alone = [session.generate(p, 12, stop_at_eos=False) for p in PROMPTS]
        # five rows on batch sizes [1, 3]: one call of 3 and one of 3 with a padding row
        assert session.generate_batch(PROMPTS, 12, stop_at_eos=False) == alone
    assert alone == [hf_greedy(ckpt, p, 12) for p in PROMPTS]


def test_bad_batched_calls_are_refused_and_tensor_prompts_work(batch_tree):
    with runtime.load(batch_tree[1]) as session:
        with pytest.raises(TyllmError, match="exceed the KV cache of 48"):
            session.decode_rows([1, 2], [3, 48], [0, 1])
        for bad in (7, [1, 2, 3], "w1 w2"):
            with pytest.raises(TyllmError, match="list of prompts"):
                session.generate_batch(bad, 4)
        assert session.generate_batch(torch.tensor([PROMPTS[0]] * 2), 3, stop_at_eos=False) \
            == [session.generate(PROMPTS[0], 3, stop_at_eos=False)] * 2
