"""vLLM's own sampler over the logits of the requests that sample this step.

Greedy, temperature, top-p, top-k, per-request seeds, penalties, allowed/bad words and logprobs go
through `vllm.v1.sample.sampler.Sampler` exactly as in stock vLLM: the runner only builds the
`SamplingMetadata` vLLM's input batch would build for the same requests. What needs vLLM's
stateful logits processors (min_p, min_tokens, logit_bias), prompt logprobs, structured output and
thinking budgets is refused up front with the parameter's name.
"""

from dataclasses import dataclass, field

import torch
from vllm.sampling_params import SamplingType
from vllm.v1.sample.logits_processor import LogitsProcessors
from vllm.v1.sample.metadata import SamplingMetadata
from vllm.v1.sample.sampler import Sampler

from tyllm.errors import TyllmError


def unsupported(params) -> list[str]:
    """Names of the sampling parameters of `params` that tyllm's worker cannot honour."""
    checks = {
        "prompt_logprobs": params.prompt_logprobs is not None,
        "min_p": params.min_p > 0,
        "min_tokens": params.min_tokens > 0,
        "logit_bias": bool(params.logit_bias),
        "structured_outputs": params.structured_outputs is not None,
        "thinking_token_budget": getattr(params, "thinking_token_budget", None) is not None,
    }
    return [name for name, refused in checks.items() if refused]


def check_supported(params) -> None:
    if params is None:
        raise TyllmError("tyllm's vLLM worker generates text only: pooling requests are not "
                         "supported.")
    if bad := unsupported(params):
        raise TyllmError(unsupported_message(bad))


def unsupported_message(names: list[str]) -> str:
    return (f"SamplingParams {', '.join(names)} is not supported by tyllm's compiled dies: leave "
            f"it at its default. Supported: temperature, top_p, top_k, seed, presence/frequency/"
            f"repetition penalties, stop, max_tokens, logprobs, allowed_token_ids, bad_words.")


SPECULATIVE_LOGPROBS = ("logprobs with speculative decoding are not supported by tyllm's dies "
                        "yet: drop logprobs, or start the engine without speculative_config.")


@dataclass
class SamplingState:
    """One request's sampling parameters and its seeded generator (advanced once per sample)."""

    params: object
    prompt_ids: list[int]
    output_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None

    @classmethod
    def of(cls, params, prompt_ids: list[int], output_ids=()) -> "SamplingState":
        generator = None
        if params.seed is not None and params.sampling_type == SamplingType.RANDOM_SEED:
            generator = torch.Generator(device="cpu").manual_seed(params.seed)
        return cls(params, list(prompt_ids), list(output_ids), generator)


def _per_row(states, name: str, dtype) -> torch.Tensor:
    return torch.tensor([getattr(s.params, name) for s in states], dtype=dtype)


def _prompt_ids(states, vocab_size: int) -> torch.Tensor:
    """Prompts padded with vocab_size, as vLLM's penalties expect."""
    width = max(len(s.prompt_ids) for s in states)
    padded = torch.full((len(states), width), vocab_size, dtype=torch.int64)
    for row, state in enumerate(states):
        padded[row, :len(state.prompt_ids)] = torch.tensor(state.prompt_ids)
    return padded


def _allowed_mask(states, vocab_size: int) -> torch.Tensor | None:
    if not any(s.params.allowed_token_ids for s in states):
        return None
    mask = torch.zeros(len(states), vocab_size, dtype=torch.bool)  # True: filled with -inf
    for row, state in enumerate(states):
        if state.params.allowed_token_ids:
            mask[row] = True
            mask[row, state.params.allowed_token_ids] = False
    return mask


def _num_logprobs(params, vocab_size: int) -> int | None:
    return vocab_size if params.logprobs == -1 else params.logprobs


def sampling_metadata(states: list[SamplingState], vocab_size: int) -> SamplingMetadata:
    """What vLLM's InputBatch builds for these requests, one row each."""
    greedy = [s.params.sampling_type == SamplingType.GREEDY for s in states]
    top_k = [s.params.top_k if 0 < s.params.top_k < vocab_size else vocab_size for s in states]
    no_penalties = all(s.params.presence_penalty == 0 and s.params.frequency_penalty == 0
                       and s.params.repetition_penalty == 1 for s in states)
    logprobs = [n for s in states if (n := _num_logprobs(s.params, vocab_size)) is not None]
    bad_words = {row: s.params.bad_words_token_ids for row, s in enumerate(states)
                 if s.params.bad_words_token_ids}
    token_logprobs = {row: s.params.logprob_token_ids for row, s in enumerate(states)
                      if s.params.logprob_token_ids is not None}
    return SamplingMetadata(
        temperature=None if all(greedy) else torch.tensor(
            [0.0 if g else s.params.temperature for g, s in zip(greedy, states, strict=True)]),
        all_greedy=all(greedy), all_random=not any(greedy),
        top_p=None if all(s.params.top_p >= 1 for s in states) else _per_row(
            states, "top_p", torch.float32),
        top_k=None if all(k == vocab_size for k in top_k) else torch.tensor(top_k,
                                                                              dtype=torch.int32),
        generators={row: s.generator for row, s in enumerate(states) if s.generator is not None},
        max_num_logprobs=max(logprobs) if logprobs else None,
        logprob_token_ids=token_logprobs or None,
        no_penalties=no_penalties,
        prompt_token_ids=None if no_penalties else _prompt_ids(states, vocab_size),
        frequency_penalties=_per_row(states, "frequency_penalty", torch.float32),
        presence_penalties=_per_row(states, "presence_penalty", torch.float32),
        repetition_penalties=_per_row(states, "repetition_penalty", torch.float32),
        output_token_ids=[s.output_ids for s in states],
        allowed_token_ids_mask=_allowed_mask(states, vocab_size),
        bad_words_token_ids=bad_words,
        logitsprocs=LogitsProcessors())


class BatchSampler:
    """Samples one token per row of `logits` [rows, vocab] with vLLM's Sampler."""

    def __init__(self, vocab_size: int, logprobs_mode: str = "raw_logprobs"):
        self.vocab_size = vocab_size
        self.sampler = Sampler(logprobs_mode=logprobs_mode)

    def sample(self, states: list[SamplingState], logits: torch.Tensor):
        """Returns (token ids, LogprobsTensors or None), one row per state."""
        if logits.shape[-1] != self.vocab_size:
            raise TyllmError(f"The dies returned {logits.shape[-1]} logits, vLLM expects "
                             f"vocab_size={self.vocab_size}: the tree was compiled from "
                             f"another model.")
        output = self.sampler(logits.float(), sampling_metadata(states, self.vocab_size))
        return output.sampled_token_ids[:, 0].tolist(), output.logprobs_tensors
