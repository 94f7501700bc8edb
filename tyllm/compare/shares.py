"""A die's share of a row-parallel linear, as HF's values give it: what the die computes before
the dies' partial sums are added by the all-reduce."""

import torch


def die_share(x: torch.Tensor, weight: torch.Tensor, columns: range) -> torch.Tensor:
    """A die's share of a row-parallel linear: its input columns times the same weight columns."""
    cols = slice(columns.start, columns.stop)
    return x[:, cols].double() @ weight.detach()[:, cols].double().T
