"""A step's logits on the host. The dies' threads keep off torch's OpenMP threads: the dies'
kernels own the cores, and OpenMP threads woken by one large torch op spin on them for a while
afterwards (a decode step measured 12.7 ms against its graph's 4.8 while that lasted). The
caller's join stays a torch op (`joined_logits`)."""

import numpy as np
import torch

SERIAL_ELEMENTS = 16384  # under torch's parallel grain (32768 elements): a serial copy


def float_logits(logits: torch.Tensor) -> torch.Tensor:
    """A float32 copy of a graph's logits (the graph's memory is reused): a half-precision
    tree's logits are compared and sampled in float32, as vLLM's sampler and HF's generation
    do (an argmax over 49152 float16 logits costs 3x one over float32). Copied in pieces under
    torch's parallel grain, on the calling thread (numpy converts float16 in software, 20x
    slower)."""
    flat = logits.reshape(-1)
    out = torch.empty(flat.shape, dtype=torch.float32)
    for start in range(0, flat.numel(), SERIAL_ELEMENTS):
        out[start:start + SERIAL_ELEMENTS].copy_(flat[start:start + SERIAL_ELEMENTS])
    return out.view(logits.shape)


def greedy_token(logits: torch.Tensor) -> int:
    """The argmax of one row of logits, the first on ties as torch.argmax: through numpy for
    float32 rows (an 8x faster scan over a 49152-token vocabulary, a step's host work)."""
    if logits.dtype == torch.float32 and logits.device.type == "cpu":
        return int(np.argmax(logits.detach().numpy()))
    return int(torch.argmax(logits))


def joined_logits(slices: list[torch.Tensor]) -> torch.Tensor:
    """The dies' vocab slices as one new tensor, by torch, one die's too: without that copy on
    the calling thread the int4 SmolLM2 tree's 512-token TTFT took 1139-1197 ms against
    673-711 (alternating, one session; decode within 10 %). Why is not known: a guess is that
    the OpenMP threads the copy wakes keep the idle core from sleeping between the prefill's
    short parallel kernels."""
    return torch.cat(slices, dim=-1)
