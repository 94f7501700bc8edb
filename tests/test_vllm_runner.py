"""SlotRunner: vLLM's SchedulerOutput in, ModelRunnerOutput out, one KV slot per request."""

from types import SimpleNamespace

import pytest
import torch

from tyllm.errors import TyllmError

VOCAB = 100


class CountingSession:
    """Logits that pick token (last position + 1): easy to predict; records each call."""

    def __init__(self):
        self.calls = []

    def release(self, slot):  # the runner frees a finished request's slot state
        self.calls.append(("release", slot))

    def extend(self, tokens, start, slot):
        self.calls.append((list(tokens), start, slot))
        return torch.nn.functional.one_hot(torch.tensor(start + len(tokens)), VOCAB).float()

    def decode_rows(self, tokens, starts, slots):
        """One call for every decode row of a step (recorded as its rows, and in `batches`)."""
        self.batches = [*getattr(self, "batches", []), list(slots)]
        return torch.stack([self.extend([t], s, slot)
                            for t, s, slot in zip(tokens, starts, slots, strict=True)])


def scheduled(new=(), cached=(), computed=(), counts=None, finished=(), preempted=None,
              resumed=(), all_token_ids=None):
    cached_reqs = SimpleNamespace(req_ids=list(cached), resumed_req_ids=set(resumed),
                                  all_token_ids=all_token_ids or {},
                                  num_computed_tokens=list(computed))
    return SimpleNamespace(scheduled_new_reqs=list(new), scheduled_cached_reqs=cached_reqs,
                           num_scheduled_tokens=counts or {}, finished_req_ids=set(finished),
                           preempted_req_ids=preempted, scheduled_spec_decode_tokens={})


def new_request(req_id, prompt, **sampling):
    from vllm import SamplingParams

    return SimpleNamespace(req_id=req_id, prompt_token_ids=prompt, num_computed_tokens=0,
                           mm_features=[],
                           sampling_params=SamplingParams(temperature=0, **sampling))


def runner(slots=2):
    from tyllm.vllm_ext.runner import SlotRunner
    from tyllm.vllm_ext.sampling import BatchSampler

    return SlotRunner(CountingSession(), num_slots=slots, sampler=BatchSampler(VOCAB))


def test_chunked_prefill_samples_after_the_last_chunk_and_frees_slots():
    r = runner()
    first = r.execute(scheduled(new=[new_request("a", [5, 6, 7]), new_request("b", [9])],
                                counts={"a": 2, "b": 1}))
    assert first.sampled_token_ids == [[], [1]]  # "a" is mid-prompt, "b" samples
    second = r.execute(scheduled(cached=["a", "b"], computed=[2, 1], counts={"a": 1, "b": 1}))
    assert second.sampled_token_ids == [[3], [2]]
    assert r.session.calls[2:] == [([7], 2, 0), ([1], 1, 1)]
    r.execute(scheduled(finished=["a"]))
    assert r.free == [0]


def test_logprob_rows_follow_the_requests_that_sampled():
    r = runner()
    out = r.execute(scheduled(new=[new_request("a", [5, 6, 7], logprobs=2),
                                   new_request("b", [9], logprobs=2)], counts={"a": 2, "b": 1}))
    assert out.logprobs.slice_request(1, 1).logprob_token_ids[0][0] == 1  # "b"'s sampled token
    assert out.logprobs.cu_num_generated_tokens == [0, 0, 1]


def test_preempted_request_restarts_in_a_fresh_slot():
    r = runner()
    r.execute(scheduled(new=[new_request("a", [5, 6])], counts={"a": 2}))
    r.execute(scheduled(preempted={"a"}))
    assert r.free == [1, 0]
    out = r.execute(scheduled(cached=["a"], computed=[0], counts={"a": 3}, resumed=["a"],
                              all_token_ids={"a": [5, 6, 2]}))
    assert out.sampled_token_ids == [[3]]
    assert r.session.calls[-1] == ([5, 6, 2], 0, 1)


def test_more_sequences_than_slots_is_refused():
    r = runner(slots=1)
    with pytest.raises(TyllmError, match="max_num_seqs"):
        r.execute(scheduled(new=[new_request("a", [1]), new_request("b", [2])],
                            counts={"a": 1, "b": 1}))


def test_unsupported_sampling_is_refused_with_its_name():
    r = runner()
    with pytest.raises(TyllmError, match="min_tokens"):
        r.execute(scheduled(new=[new_request("a", [1], min_tokens=3)], counts={"a": 1}))


def test_a_step_decodes_all_its_decode_requests_in_one_call():
    r = runner(slots=3)
    r.execute(scheduled(new=[new_request("a", [5, 6, 7]), new_request("b", [9]),
                             new_request("c", [1, 2])], counts={"a": 3, "b": 1, "c": 1}))
    assert r.session.batches == [[1]]  # "b": one prompt token, then it samples
    step = r.execute(scheduled(cached=["a", "b", "c"], computed=[3, 1, 1],
                               counts={"a": 1, "b": 1, "c": 1}))
    assert r.session.batches[-1] == [0, 1, 2]  # "c"'s last prompt token decodes with them
    assert step.sampled_token_ids == [[4], [2], [2]]
