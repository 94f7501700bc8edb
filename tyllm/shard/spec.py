"""Shard descriptions attached to weights; the splitter reads only these."""

from dataclasses import dataclass

from tyllm.errors import TyllmError
from tyllm.shard.plan import DiePlan


@dataclass(frozen=True)
class Replicate:
    """Every die holds the whole tensor."""


@dataclass(frozen=True)
class ShardDim:
    """Split tensor dimension `dim` along a plan axis ("q_heads", "kv_heads", "ffn", "vocab");
    each axis item covers `unit` consecutive elements (head_dim for heads), divided by `per`
    when the tensor packs `per` elements into one (2 for int4 bytes, G for group scales).
    `offset`: the elements of `dim` before the segment this entry reads (a fused tensor, e.g.
    Phi-3's qkv_proj holds q, then k, then v rows)."""

    dim: int
    axis: str
    unit: int = 1
    per: int = 1
    offset: int = 0


def shard_slices(spec: Replicate | ShardDim, plan: DiePlan, ndim: int) -> tuple[slice, ...]:
    """The per-dimension slices of a tensor of rank `ndim` that die `plan.die` holds."""
    slices = [slice(None)] * ndim
    if isinstance(spec, ShardDim):
        r = plan.axis(spec.axis)
        start, stop = spec.offset + r.start * spec.unit, spec.offset + r.stop * spec.unit
        if start % spec.per or stop % spec.per:
            raise TyllmError(f"Die {plan.die} holds elements [{start}, {stop}) of a tensor that "
                             f"packs {spec.per} per entry: the split is not aligned; choose "
                             f"another die count.")
        slices[spec.dim] = slice(start // spec.per, stop // spec.per)
    return tuple(slices)
