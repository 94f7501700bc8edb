"""SchedulerOutput -> ModelRunnerOutput on a tyllm session: one static KV slot per request.

vLLM schedules, tyllm runs. Each request owns one slot (its own KV cache on every die) from its
first scheduled chunk until it finishes; a step runs every scheduled request one after the other
and samples greedily once a request's prompt is fully in its cache.
"""

from dataclasses import dataclass, field

import torch
from vllm.v1.outputs import ModelRunnerOutput

from tyllm.errors import TyllmError


@dataclass
class SlotRequest:
    slot: int
    token_ids: list[int]  # prompt + generated so far
    num_computed: int = 0
    prompt_len: int = field(init=False)

    def __post_init__(self):
        self.prompt_len = len(self.token_ids)


def check_greedy(req_id: str, params) -> None:
    if params is None or params.temperature != 0 or params.logprobs or params.prompt_logprobs:
        raise TyllmError(f"Request {req_id} asks for sampling or logprobs, which tyllm's vLLM "
                         f"worker does not do yet: use SamplingParams(temperature=0) without "
                         f"logprobs.")


class SlotRunner:
    def __init__(self, session, num_slots: int):
        self.session = session
        self.free = list(range(num_slots))
        self.requests: dict[str, SlotRequest] = {}

    def _admit(self, req_id: str, token_ids: list[int], num_computed: int) -> None:
        if not self.free:
            raise TyllmError(f"No free KV slot for request {req_id}: the engine scheduled more "
                             f"than max_num_seqs={len(self.requests)} sequences at once.")
        self.requests[req_id] = SlotRequest(self.free.pop(0), list(token_ids), num_computed)

    def _release(self, req_id: str) -> None:
        if (request := self.requests.pop(req_id, None)) is not None:
            self.free.append(request.slot)

    def _update_states(self, out) -> None:
        for req_id in out.finished_req_ids | (out.preempted_req_ids or set()):
            self._release(req_id)
        for new in out.scheduled_new_reqs:
            check_greedy(new.req_id, new.sampling_params)
            self._admit(new.req_id, new.prompt_token_ids, new.num_computed_tokens)
        cached = out.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            if req_id in cached.resumed_req_ids:  # preempted earlier: start it again
                self._release(req_id)
                self._admit(req_id, cached.all_token_ids[req_id], cached.num_computed_tokens[i])
            self.requests[req_id].num_computed = cached.num_computed_tokens[i]

    def _run(self, req_id: str, num_tokens: int) -> list[int]:
        request = self.requests[req_id]
        start = request.num_computed
        tokens = request.token_ids[start:start + num_tokens]
        logits = self.session.extend(tokens, start, request.slot)
        request.num_computed = start + len(tokens)
        if request.num_computed < len(request.token_ids):
            return []  # a prompt chunk that is not the last: nothing to sample yet
        token = int(torch.argmax(logits))
        request.token_ids.append(token)
        return [token]

    def execute(self, out) -> ModelRunnerOutput:
        if out.scheduled_spec_decode_tokens:
            raise TyllmError("Speculative decoding is not supported by tyllm's vLLM worker: "
                             "start the engine without speculative_config.")
        self._update_states(out)
        req_ids = list(out.num_scheduled_tokens)
        sampled = [self._run(r, out.num_scheduled_tokens[r]) for r in req_ids]
        return ModelRunnerOutput(req_ids=req_ids,
                                 req_id_to_index={r: i for i, r in enumerate(req_ids)},
                                 sampled_token_ids=sampled)
