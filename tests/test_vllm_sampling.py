"""Sampling through tyllm's vLLM worker: vLLM's own sampler, fed what vLLM's input batch would feed.

Unit tests drive BatchSampler on made-up logits; the slow test runs seeded sampling, top-k/top-p,
penalties, stop strings and logprobs (tests/smollm2_requests.py) on compiled SmolLM2 and on stock
vLLM CPU, and compares: the engines are shared with the parity test (conftest.py).
"""

import math

import pytest
import torch

from tyllm.errors import TyllmError

VOCAB = 50


def states(*params_list, prompt=(1, 2, 3)):
    from tyllm.vllm_ext.sampling import SamplingState

    return [SamplingState.of(p, list(prompt)) for p in params_list]


def sampler():
    from tyllm.vllm_ext.sampling import BatchSampler

    return BatchSampler(VOCAB)


def logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_and_top_k_1_pick_the_argmax():
    from vllm import SamplingParams

    x = logits(2)
    tokens, logprobs = sampler().sample(
        states(SamplingParams(temperature=0), SamplingParams(temperature=1.0, top_k=1, seed=3)), x)
    assert tokens == x.argmax(-1).tolist()
    assert logprobs is None


def test_same_seed_same_tokens_and_other_seed_differs():
    from vllm import SamplingParams

    def draw(seed):
        state = states(SamplingParams(temperature=1.5, seed=seed))
        return [sampler().sample(state, logits(1, step))[0][0] for step in range(12)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_allowed_token_ids_restrict_random_samples():
    from vllm import SamplingParams

    allowed = [4, 9, 33]
    state = states(SamplingParams(temperature=2.0, seed=1, allowed_token_ids=allowed))
    assert all(sampler().sample(state, logits(1, s))[0][0] in allowed for s in range(20))


def test_logprobs_are_log_softmax_of_the_logits():
    from vllm import SamplingParams

    x = logits(1)
    tokens, logprobs = sampler().sample(states(SamplingParams(temperature=0, logprobs=3)), x)
    expected = torch.log_softmax(x[0], -1)
    ids, values = logprobs.logprob_token_ids[0], logprobs.logprobs[0]
    assert ids[0] == tokens[0]  # the sampled token comes first, then the top 3
    assert torch.allclose(values, expected[ids], atol=1e-5)
    assert ids[1:].tolist() == expected.topk(3).indices.tolist()


def test_repetition_penalty_moves_greedy_off_a_repeated_token():
    from vllm import SamplingParams

    x = torch.zeros(1, VOCAB)
    x[0, 2], x[0, 5] = 2.0, 1.9  # token 2 is in the prompt
    plain, _ = sampler().sample(states(SamplingParams(temperature=0)), x.clone())
    penalised, _ = sampler().sample(states(SamplingParams(temperature=0,
                                                          repetition_penalty=1.5)), x.clone())
    assert (plain, penalised) == ([2], [5])


@pytest.mark.parametrize("field", ["min_p", "min_tokens", "logit_bias", "prompt_logprobs"])
def test_unsupported_parameters_are_named(field):
    from vllm import SamplingParams

    from tyllm.vllm_ext.sampling import check_supported

    value = {"min_p": 0.1, "min_tokens": 2, "logit_bias": {3: 1.0}, "prompt_logprobs": 1}[field]
    with pytest.raises(TyllmError, match=field):
        check_supported(SamplingParams(**{field: value}))


@pytest.mark.slow
def test_sampling_matches_stock_vllm(smollm2_engines):
    ours, stock = smollm2_engines["tyllm"][1], smollm2_engines["stock"][1]
    assert ours[0]["token_ids"] == ours[1]["token_ids"]  # same seed, same tokens
    for mine, theirs in zip(ours, stock, strict=True):
        assert mine["token_ids"] == theirs["token_ids"]
        assert mine["text"] == theirs["text"]
    assert "Paris" not in ours[5]["text"]
    for mine, theirs in zip(ours[4]["logprobs"], stock[4]["logprobs"], strict=True):
        assert mine.keys() == theirs.keys()
        assert all(math.isclose(mine[k], theirs[k], abs_tol=1e-3) for k in mine)
