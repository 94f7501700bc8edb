"""SchedulerOutput -> ModelRunnerOutput on a tyllm session: one static KV slot per request.

vLLM schedules, tyllm runs. Each request owns one slot (its own KV cache on every die) from its
first scheduled chunk until it finishes, is aborted or is preempted (with prefix caching, a
request that hits vLLM's cache starts from the cached blocks: prefix_blocks.py). A step runs
the decode requests (one new token each) together, in calls of the tree's batched graphs
(`Session.decode_rows`), and every other request's prompt chunk on its own; then it samples
once, with vLLM's sampler, for the requests whose prompt is now fully in their cache. With
speculative decoding (drafts.py), requests with draft tokens run them in verify calls
(`Session.verify_rows`) and are sampled by vLLM's rejection sampler (spec_sampling.py).
"""

from dataclasses import dataclass, field

import torch
from vllm.v1.outputs import LogprobsTensors, ModelRunnerOutput

from tyllm.errors import TyllmError
from tyllm.vllm_ext.drafts import Drafts
from tyllm.vllm_ext.mm_inputs import vision_items
from tyllm.vllm_ext.prefix_blocks import PrefixBlocks
from tyllm.vllm_ext.sampling import (
    SPECULATIVE_LOGPROBS,
    BatchSampler,
    SamplingState,
    check_supported,
)
from tyllm.vllm_ext.spec_sampling import SpecSampler


@dataclass
class SlotRequest:
    slot: int
    sampling: SamplingState
    num_computed: int = 0
    images: list = field(default_factory=list)  # vision items of a multimodal prompt

    @property
    def token_ids(self) -> list[int]:
        return self.sampling.prompt_ids + self.sampling.output_ids


class SlotRunner:
    """`block_size`: vLLM's, when prefix caching is on (prefix_blocks.py), else None;
    `drafts`: the drafter (n-gram or draft model) when the engine speculates (drafts.py),
    else None."""

    def __init__(self, session, num_slots: int, sampler: BatchSampler,
                 block_size: int | None = None, drafts: Drafts | None = None):
        self.session = session
        self.blocks = PrefixBlocks(session, block_size) if block_size else None
        self.drafts = drafts
        self.spec_sampler = SpecSampler(sampler) if drafts else None
        self.proposed = None  # the drafts vLLM takes after this step (take_draft_token_ids)
        self.num_slots = num_slots
        self.free = list(range(num_slots))
        self.requests: dict[str, SlotRequest] = {}
        self.preempted: dict[str, SlotRequest] = {}  # slot freed, sampling state kept
        self.sampler = sampler

    def _admit(self, req_id: str, sampling: SamplingState, num_computed: int,
               images: list) -> None:
        if not self.free:
            raise TyllmError(f"No free KV slot for request {req_id}: the engine scheduled more "
                             f"than max_num_seqs={self.num_slots} sequences at once.")
        request = SlotRequest(self.free[0], sampling, num_computed, images)
        if images:  # embeddings, 3-axis positions and deepstack rows of the whole prompt
            self.session.prepare(request.slot, sampling.prompt_ids, images)
        self.requests[req_id] = request  # the slot is taken only once the request is ready
        self.free.pop(0)

    def _release(self, req_id: str) -> SlotRequest | None:
        if self.blocks is not None:
            self.blocks.drop(req_id)
        if self.drafts is not None:
            self.drafts.drop(req_id)
        if (request := self.requests.pop(req_id, None)) is not None:
            self.free.append(request.slot)
            self.session.release(request.slot)
        return request

    def _update_states(self, out) -> None:
        for req_id in out.finished_req_ids:
            self._release(req_id)
            self.preempted.pop(req_id, None)
        for req_id in out.preempted_req_ids or ():
            if (request := self._release(req_id)) is not None:
                self.preempted[req_id] = request
        for new in out.scheduled_new_reqs:
            check_supported(new.sampling_params)
            if self.drafts is not None and new.sampling_params.logprobs is not None:
                raise TyllmError(SPECULATIVE_LOGPROBS)  # the platform refuses it first
            state = SamplingState.of(new.sampling_params, new.prompt_token_ids)
            images = vision_items(self.session, new.mm_features)
            self._admit(new.req_id, state, new.num_computed_tokens, images)
            if self.blocks is not None:
                self.blocks.admit(new.req_id, new.block_ids[0], new.num_computed_tokens)
        cached = out.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            resumed = req_id in cached.resumed_req_ids
            if resumed:  # preempted earlier: start it again
                self._resume(req_id, cached.all_token_ids[req_id])
            self.requests[req_id].num_computed = cached.num_computed_tokens[i]
            if self.blocks is not None:
                self._update_blocks(req_id, resumed, cached.new_block_ids[i],
                                    cached.num_computed_tokens[i])

    def _update_blocks(self, req_id: str, resumed: bool, new_block_ids, num_computed: int):
        """A resumed request's block ids replace its old ones (and may hit the cache again);
        a running one's are appended."""
        ids = list(new_block_ids[0]) if new_block_ids else []
        if resumed:
            self.blocks.admit(req_id, ids, num_computed)
        elif ids:
            self.blocks.add_blocks(req_id, ids)

    def _resume(self, req_id: str, all_token_ids: list[int]) -> None:
        request = self.preempted.pop(req_id, None) or self._release(req_id)
        old = request.sampling
        prompt = len(old.prompt_ids)
        state = SamplingState(old.params, all_token_ids[:prompt], list(all_token_ids[prompt:]),
                              old.generator)
        self._admit(req_id, state, 0, request.images)

    def _decodes(self, req_id: str, num_tokens: int) -> bool:
        """The request adds its last known token and samples the next one."""
        request = self.requests[req_id]
        return num_tokens == 1 and request.num_computed == len(request.token_ids) - 1

    def _decode(self, req_ids: list[str]) -> dict[str, torch.Tensor]:
        """One new token for each of `req_ids`, in as few die calls as the tree allows."""
        if not req_ids:
            return {}
        requests = [self.requests[r] for r in req_ids]
        if self.blocks is not None:  # a hit that left one prompt token runs as a decode
            for req_id, q in zip(req_ids, requests, strict=True):
                self.blocks.load(req_id, q.slot)
        logits = self.session.decode_rows([q.token_ids[q.num_computed] for q in requests],
                                          [q.num_computed for q in requests],
                                          [q.slot for q in requests])
        for req_id, q in zip(req_ids, requests, strict=True):
            q.num_computed += 1
            if self.blocks is not None:
                self.blocks.store(req_id, q.slot, q.num_computed)
        return dict(zip(req_ids, logits, strict=True))

    def _run(self, req_id: str, num_tokens: int) -> torch.Tensor | None:
        """Runs this step's chunk; returns logits when the request samples now."""
        request = self.requests[req_id]
        start, known = request.num_computed, request.token_ids
        tokens = known[start:start + num_tokens]
        if self.blocks is not None:  # a prefix hit's cached blocks, then this chunk's
            self.blocks.load(req_id, request.slot)
        logits = self.session.extend(tokens, start, request.slot)
        request.num_computed = start + len(tokens)
        if self.blocks is not None:
            self.blocks.store(req_id, request.slot, request.num_computed)
        return logits if request.num_computed == len(known) else None

    def _verify(self, req_ids: list[str], spec: dict) -> dict[str, torch.Tensor]:
        """Each request's last token and its draft tokens in verify calls; [1 + drafts, V]
        logits each (row j scores the token after input j)."""
        if not req_ids:
            return {}
        requests = [self.requests[r] for r in req_ids]
        rows = self.session.verify_rows(
            [[q.token_ids[q.num_computed], *spec[r]] for r, q in zip(req_ids, requests,
                                                                      strict=True)],
            [q.num_computed for q in requests], [q.slot for q in requests])
        return dict(zip(req_ids, rows, strict=True))

    def execute(self, out) -> ModelRunnerOutput:
        self._update_states(out)
        spec = out.scheduled_spec_decode_tokens or {}
        req_ids, counts = list(out.num_scheduled_tokens), out.num_scheduled_tokens
        verifies = [r for r in req_ids if spec.get(r)]
        decodes = [r for r in req_ids if r not in verifies and self._decodes(r, counts[r])]
        logits = self._decode(decodes) | self._verify(verifies, spec) | {
            r: x for r in req_ids if r not in decodes and r not in verifies
            and (x := self._run(r, counts[r])) is not None}
        logits = {r: logits[r] for r in req_ids if r in logits}  # sampled in vLLM's order
        if verifies:
            sampled, logprobs = self._sample_drafts(req_ids, logits, spec)
        else:
            sampled, logprobs = self._sample(req_ids, logits)
        self._propose(req_ids, sampled)
        return ModelRunnerOutput(req_ids=req_ids,
                                 req_id_to_index={r: i for i, r in enumerate(req_ids)},
                                 sampled_token_ids=sampled, logprobs=logprobs)

    def take_draft_token_ids(self):
        proposed, self.proposed = self.proposed, None
        return proposed

    def _propose(self, req_ids: list[str], sampled: list[list[int]]) -> None:
        """The drafts for the requests that sampled a token this step."""
        if self.drafts is not None:
            contexts = {r: (self.requests[r].slot, self.requests[r].token_ids)
                        for r, tokens in zip(req_ids, sampled, strict=True) if tokens}
            self.proposed = self.drafts.propose(contexts, len(self.requests))

    def _sample(self, req_ids: list[str], logits: dict[str, torch.Tensor]):
        """One token per request in `logits`; [] for requests still mid-prompt."""
        if not logits:
            return [[] for _ in req_ids], None
        states = [self.requests[r].sampling for r in logits]
        tokens, logprobs = self.sampler.sample(states, torch.stack(list(logits.values())))
        new = dict(zip(logits, tokens, strict=True))
        for req_id, token in new.items():
            self.requests[req_id].sampling.output_ids.append(token)
        sampled = [[new[r]] if r in new else [] for r in req_ids]
        return sampled, logprobs_lists(logprobs, sampled)

    def _sample_drafts(self, req_ids: list[str], logits: dict[str, torch.Tensor], spec: dict):
        """vLLM's rejection sampler over every sampling request's rows (a request without
        drafts has one row); a verified request's KV now holds its last token and its kept
        drafts."""
        states = [self.requests[r].sampling for r in logits]
        rows = [x if x.dim() == 2 else x.unsqueeze(0) for x in logits.values()]
        tokens, _ = self.spec_sampler.sample(states, rows, [spec.get(r, []) for r in logits])
        new = dict(zip(logits, tokens, strict=True))
        for req_id, kept in new.items():
            request = self.requests[req_id]
            if spec.get(req_id):
                request.num_computed += len(kept)  # the last token, then len(kept) - 1 drafts
                self.drafts.kept(req_id, len(kept) - 1)
                if self.blocks is not None:
                    self.blocks.store(req_id, request.slot, request.num_computed)
            request.sampling.output_ids.extend(kept)
        return [new.get(r, []) for r in req_ids], None


def logprobs_lists(logprobs: LogprobsTensors | None, sampled: list[list[int]]):
    """Rows follow the sampling requests; cu_num_generated_tokens maps request index -> row."""
    if logprobs is None:
        return None
    cu = [0]
    for tokens in sampled:
        cu.append(cu[-1] + len(tokens))
    return logprobs.tolists(cu)
