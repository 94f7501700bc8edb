"""Shard descriptions attached to weights; the splitter reads only these."""

from dataclasses import dataclass

from tyllm.shard.plan import DiePlan


@dataclass(frozen=True)
class Replicate:
    """Every die holds the whole tensor."""


@dataclass(frozen=True)
class ShardDim:
    """Split tensor dimension `dim` along a plan axis ("q_heads", "kv_heads", "ffn", "vocab");
    each axis item covers `unit` consecutive elements (head_dim for heads)."""

    dim: int
    axis: str
    unit: int = 1


def shard_slices(spec: Replicate | ShardDim, plan: DiePlan, ndim: int) -> tuple[slice, ...]:
    """The per-dimension slices of a tensor of rank `ndim` that die `plan.die` holds."""
    slices = [slice(None)] * ndim
    if isinstance(spec, ShardDim):
        r = plan.axis(spec.axis)
        slices[spec.dim] = slice(r.start * spec.unit, r.stop * spec.unit)
    return tuple(slices)
