"""vLLM's rejection sampler over verify rows (tyllm/vllm_ext/spec_sampling.py): greedy keeps the
drafts that are the argmax, and sampled tokens follow the target's distribution (a statistical
check over many seeded requests, as vLLM's own rejection-sampler tests do)."""

import collections

import pytest
import torch
from vllm import SamplingParams

from tyllm.vllm_ext.sampling import BatchSampler, SamplingState
from tyllm.vllm_ext.spec_sampling import SpecSampler

VOCAB = 5
TARGET = torch.tensor([0.45, 0.25, 0.15, 0.15, 0.0])
SAMPLES = 3000


@pytest.fixture(scope="module")
def sampler() -> SpecSampler:
    return SpecSampler(BatchSampler(VOCAB))


def state(seed: int | None = None, temperature: float = 1.0) -> SamplingState:
    return SamplingState.of(SamplingParams(temperature=temperature, seed=seed), [1, 2])


def rows_of(*argmaxes: int) -> torch.Tensor:
    rows = torch.full((len(argmaxes), VOCAB), -5.0)
    rows[torch.arange(len(argmaxes)), torch.tensor(argmaxes)] = 5.0
    return rows


def target_rows(n: int) -> torch.Tensor:
    return torch.log(TARGET.clamp_min(1e-12)).repeat(n, 1)


def test_greedy_keeps_the_drafts_up_to_the_first_miss_then_the_argmax(sampler):
    tokens, _ = sampler.sample([state(temperature=0), state(temperature=0)],
                               [rows_of(3, 1, 2, 4), rows_of(0)], [[3, 1, 0], []])
    assert tokens == [[3, 1, 2], [0]]
    tokens, _ = sampler.sample([state(temperature=0)], [rows_of(3, 1, 2)], [[3, 1]])
    assert tokens == [[3, 1, 2]]  # every draft held: the bonus token


def distribution(tokens: list[int]) -> torch.Tensor:
    counts = collections.Counter(tokens)
    return torch.tensor([counts[t] / len(tokens) for t in range(VOCAB)])


@pytest.mark.parametrize("draft", [[0], [3], [4], [1, 2]])
def test_sampled_tokens_follow_the_target_distribution(sampler, draft):
    """Whatever the drafts, each position's token is distributed as the target (here the same
    distribution at every row): the first token over all samples, the second over the samples
    that went on past an accepted first draft."""
    states = [state(seed=i) for i in range(SAMPLES)]
    tokens, _ = sampler.sample(states, [target_rows(len(draft) + 1)] * SAMPLES,
                               [draft] * SAMPLES)
    first = distribution([t[0] for t in tokens])
    assert (first - TARGET).abs().sum() / 2 < 0.04, first
    if len(draft) > 1:
        second = distribution([t[1] for t in tokens if t[0] == draft[0] and len(t) > 1])
        assert (second - TARGET).abs().sum() / 2 < 0.06, second


def test_seeded_requests_repeat_and_greedy_ones_stay_greedy_beside_them(sampler):
    def run():
        states = [state(seed=7), state(temperature=0), state(seed=8, temperature=0.7)]
        rows = [target_rows(3), rows_of(2, 2, 2), target_rows(3)]
        return sampler.sample(states, rows, [[0, 1], [2, 1], [1, 1]])[0]

    first = run()
    assert first == run()
    assert first[1] == [2, 2]  # greedy: the first draft held, the second missed
