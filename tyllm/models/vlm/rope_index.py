"""The rope-index graph (`compute_rope_param.so`): token types + vision grids -> 3-axis positions.

transformers computes the multimodal positions with a Python loop over runs of same-type tokens
(`get_rope_index`). This is the same rule written with whole-tensor operations, so it compiles to
a static graph over the padded prompt:
- a text token takes the next position on all three axes;
- a run of vision tokens (one image, one video, or one frame pair) with LLM grid (t, h, w) starts
  at the current position p: token (ti, hi, wi) gets (p + floor(ti * interval), p + hi, p + wi),
  and the run advances the position by max(h, w).
Inputs: token_type [L] (0 text, 1 image, 2 video; padding is text), grids [K, 3] and intervals
[K] of the runs in prompt order (unused rows: zeros), length [1]. Outputs: position_ids [3, L]
and rope_delta [1] (max position + 1 - length: decode positions are index + delta).
"""

import torch
from torch import nn


class RopeIndexStep(nn.Module):
    def __init__(self, length: int, max_runs: int):
        super().__init__()
        self.length, self.max_runs = length, max_runs

    def forward(self, token_type, grids, intervals, length):
        index = torch.arange(self.length, dtype=torch.int64)
        vision = token_type > 0
        previous = torch.cat([torch.zeros(1, dtype=torch.int64), token_type[:-1]])
        run_start = vision & (token_type != previous)
        run = torch.clamp(torch.cumsum(run_start.to(torch.int64), 0) - 1, 0, self.max_runs - 1)
        t, h, w = grids[:, 0], grids[:, 1], grids[:, 2]
        sizes = t * h * w
        first_token = torch.cumsum(sizes, 0) - sizes  # vision-token rank where each run starts
        rank = torch.cumsum(vision.to(torch.int64), 0) - 1
        offset = rank - torch.index_select(first_token, 0, run)
        one = torch.ones(1, dtype=torch.int64)  # unused grid rows are zeros: never divide by 0
        hr = torch.maximum(torch.index_select(h, 0, run), one)
        wr = torch.maximum(torch.index_select(w, 0, run), one)
        ti = torch.div(offset, hr * wr, rounding_mode="floor")
        hi = torch.remainder(torch.div(offset, wr, rounding_mode="floor"), hr)
        wi = torch.remainder(offset, wr)
        run_end = vision & (offset == torch.index_select(sizes, 0, run) - 1)
        step = torch.where(vision, torch.where(run_end, torch.maximum(hr, wr), 0), 1)
        base = torch.cumsum(step, 0) - step  # position where the token's run (or itself) starts
        tpos = (ti.to(torch.float32) * torch.index_select(intervals, 0, run)).to(torch.int64)
        zero = torch.zeros_like(base)
        positions = torch.stack([
            base + torch.where(vision, tpos, zero),
            base + torch.where(vision, hi, zero),
            base + torch.where(vision, wi, zero)])
        valid = index < length
        top = torch.max(torch.where(valid, positions.max(0).values, -1))
        delta = (top + 1 - length).reshape(1)
        return torch.where(valid, positions, 0), delta
