import pytest

from tyllm.errors import TyllmError
from tyllm.models.dims import DecoderDims
from tyllm.shard.plan import even_split, plan_dies
from tyllm.shard.spec import Replicate, ShardDim, shard_slices


def dims(heads, kv, ffn=90, vocab=250):
    return DecoderDims(vocab_size=vocab, hidden_size=48, intermediate_size=ffn, num_layers=1,
                       num_heads=heads, num_kv_heads=kv, head_dim=8, rms_norm_eps=1e-6,
                       tie_word_embeddings=False)


@pytest.mark.parametrize(("heads", "kv"), [(9, 3), (6, 2), (8, 2), (4, 4), (8, 1), (12, 4)])
@pytest.mark.parametrize("dies", [1, 2, 3, 4])
def test_every_head_ffn_column_and_vocab_row_has_one_owner(heads, kv, dies):
    if dies > heads:
        pytest.skip("more dies than heads")
    d = dims(heads, kv)
    plans = plan_dies(d, dies)
    assert sorted(q for p in plans for q in p.q_heads) == list(range(heads))
    assert sorted(f for p in plans for f in p.ffn) == list(range(d.intermediate_size))
    assert sorted(v for p in plans for v in p.vocab) == list(range(d.vocab_size))
    for p in plans:
        needed = {q // d.group_size for q in p.q_heads}
        assert needed == set(p.kv_heads), "a die must hold exactly the KV heads it reads"
        assert all(0 <= k < len(p.kv_heads) for k in p.kv_index(d.group_size))


def test_kv_heads_are_split_not_replicated_when_they_suffice():
    plans = plan_dies(dims(9, 3), 2)
    assert [len(p.kv_heads) for p in plans] == [2, 1]
    assert [len(p.q_heads) for p in plans] == [6, 3]
    assert all(p.kv_group(3) == 3 for p in plans)


def test_non_uniform_groups_are_detected():
    plans = plan_dies(dims(8, 2), 3)  # query heads 3,3,2 straddle the groups of 4
    assert plans[1].kv_group(4) is None
    assert plans[1].kv_index(4) == (0, 1, 1)


def test_even_split_sizes_differ_by_at_most_one():
    parts = even_split(10, 4)
    assert [len(r) for r in parts] == [3, 3, 2, 2]
    assert parts[-1].stop == 10


@pytest.mark.parametrize(("dies", "message"), [(0, "use 1 or more"), (7, "at most 6 dies")])
def test_impossible_die_counts_are_refused(dies, message):
    with pytest.raises(TyllmError, match=message):
        plan_dies(dims(6, 2), dies)


def test_shard_slices_read_only_the_declaration():
    plan = plan_dies(dims(6, 2), 2)[1]
    assert shard_slices(ShardDim(0, "q_heads", 8), plan, 2) == (slice(24, 48), slice(None))
    assert shard_slices(ShardDim(1, "ffn"), plan, 2) == (slice(None), slice(45, 90))
    assert shard_slices(Replicate(), plan, 1) == (slice(None),)


def test_int4_groups_stay_whole_on_every_die():
    plans = plan_dies(dims(6, 2, ffn=96), 3, group_size=16)  # 6 groups of MLP columns
    assert [len(p.ffn) for p in plans] == [32, 32, 32]
    assert all(p.ffn.start % 16 == 0 for p in plans)
    with pytest.raises(TyllmError, match="does not divide hidden_size=48"):
        plan_dies(dims(6, 2, ffn=96), 1, group_size=32)
    with pytest.raises(TyllmError, match="not whole int4 groups of 16"):
        plan_dies(dims(6, 2, ffn=96), 4, group_size=16)  # 2, 2, 1, 1 heads of 8 inputs


def test_int4_input_slices_are_in_bytes_and_groups():
    plan = plan_dies(dims(6, 2, ffn=96), 3, group_size=16)[1]
    assert shard_slices(ShardDim(1, "ffn", per=2), plan, 2) == (slice(None), slice(16, 32))
    assert shard_slices(ShardDim(1, "ffn", per=16), plan, 2) == (slice(None), slice(2, 4))


def test_a_segment_of_a_fused_tensor_is_sliced_after_its_offset():
    """Phi-3's qkv_proj: k rows start after the q rows (6 heads x 8); die 1 of 2 holds KV
    head 1, rows 48 + 8..16 of the fused tensor."""
    plan = plan_dies(DecoderDims(100, 48, 90, 1, 6, 2, 8, 1e-6, False), 2)[1]
    k_rows = shard_slices(ShardDim(0, "kv_heads", 8, offset=48), plan, 2)
    assert k_rows == (slice(56, 64), slice(None))
