"""Draft tokens for vLLM's scheduler: tyllm.speculate's proposers, one run per request, with
the same backoff as Session.generate.

speculative_config's method picks the proposer: "ngram" looks the request's own tokens up
(Ngram), "draft_model" decodes them greedily on the draft's compiled tree (DraftModel; its KV
slot for a request is the number of the request's slot on the target).
vLLM asks for drafts after each step (`take_draft_token_ids`) and schedules them with the
request's next token; the runner verifies them on the dies (Session.verify_rows) and vLLM's
rejection sampler keeps what holds (spec_sampling.py). A verify step of K + 1 rows costs
several decode steps on a CPU, and a batch of decode requests already reads the weights once
for all of them, so drafts are proposed only while at most SPECULATE_UP_TO requests run: under
load the engine decodes in batches without speculation."""

from dataclasses import dataclass, field

from vllm.v1.outputs import DraftTokenIds

from tyllm.speculate import DraftModel, Ngram
from tyllm.speculate.greedy import Backoff

SPECULATE_UP_TO = 1


@dataclass
class RequestDrafts:
    run: object  # the proposer's run for this request (NgramRun, DraftRun)
    backoff: Backoff = field(default_factory=Backoff)


@dataclass
class Drafts:
    proposer: Ngram | DraftModel
    tokens: int  # K: drafts per request and step (num_speculative_tokens)
    max_kv: int  # a request's tokens plus its drafts stay within the KV cache
    requests: dict[str, RequestDrafts] = field(default_factory=dict)

    @classmethod
    def of(cls, vllm_config, max_kv: int, draft_session=None) -> "Drafts | None":
        """The engine's drafter: none without speculative_config; `draft_session` is the
        draft tree's session for method "draft_model"."""
        spec = vllm_config.speculative_config
        if spec is None:
            return None
        k = spec.num_speculative_tokens
        proposer = (DraftModel(draft_session, k) if draft_session is not None
                    else Ngram(k, spec.prompt_lookup_max, spec.prompt_lookup_min))
        return cls(proposer, k, max_kv)

    def kept(self, req_id: str, drafts_kept: int) -> None:
        if (request := self.requests.get(req_id)) is not None:
            request.backoff.kept(drafts_kept)

    def drop(self, req_id: str) -> None:
        self.requests.pop(req_id, None)

    def propose(self, contexts: dict[str, tuple[int, list[int]]],
                running: int) -> DraftTokenIds | None:
        """Drafts for the requests that just sampled: `contexts` maps each to its KV slot and
        its tokens so far."""
        if not contexts or running > SPECULATE_UP_TO:
            return None
        drafts = {}
        for req_id, (slot, context) in contexts.items():
            room = min(self.tokens, self.max_kv - len(context))
            request = self.requests.get(req_id)
            if request is None:
                run = self.proposer.start(None, context, slot)
                request = self.requests[req_id] = RequestDrafts(run)
            if room > 0 and request.backoff.propose_now():
                drafts[req_id] = request.run.propose(context, room)
        return DraftTokenIds(list(drafts), list(drafts.values())) if drafts else None
