"""How attention heads, MLP columns and vocabulary rows are split across dies.

Attention is split by heads. When the die count is at most the KV-head count, KV heads are split
into contiguous, near-even groups and every die takes the query heads of its KV heads (uneven counts
give uneven shards, e.g. 3 KV heads on 2 dies -> 2 and 1). With more dies than KV heads, query heads
are split near-evenly and each die holds (replicates) the KV heads its query heads read. The MLP is
split by intermediate size and the LM head by vocabulary, both near-evenly.
"""

import math
from dataclasses import dataclass

from tyllm.errors import TyllmError
from tyllm.models.dims import DecoderDims


@dataclass(frozen=True)
class DiePlan:
    die: int
    dies: int
    q_heads: range
    kv_heads: range
    ffn: range
    vocab: range

    def axis(self, name: str) -> range:
        return getattr(self, name)

    def kv_index(self, group_size: int) -> tuple[int, ...]:
        """For each local query head, the local KV head it reads."""
        return tuple(q // group_size - self.kv_heads.start for q in self.q_heads)

    def program_key(self, group_size: int) -> tuple:
        """Dies with equal keys run the same program (their weights are graph inputs, their
        shapes and head mapping alike): one compile serves them all."""
        return (len(self.q_heads), len(self.kv_heads), len(self.ffn), len(self.vocab),
                self.kv_index(group_size))

    def kv_group(self, group_size: int) -> int | None:
        """Query heads per local KV head if every local KV head serves the same count, else None."""
        index = self.kv_index(group_size)
        counts = [index.count(k) for k in range(len(self.kv_heads))]
        uniform = len(set(counts)) == 1 and list(index) == sorted(index)
        return counts[0] if uniform else None


def even_split(total: int, parts: int) -> list[range]:
    """Contiguous ranges whose sizes differ by at most one, larger ones first."""
    base, extra = divmod(total, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + base + (i < extra))
    return [range(bounds[i], bounds[i + 1]) for i in range(parts)]


def _head_ranges(dims: DecoderDims, dies: int) -> list[tuple[range, range]]:
    g = dims.group_size
    if dies <= dims.num_kv_heads:
        kv_parts = even_split(dims.num_kv_heads, dies)
        return [(range(kv.start * g, kv.stop * g), kv) for kv in kv_parts]
    q_parts = even_split(dims.num_heads, dies)
    return [(q, range(q.start // g, (q.stop - 1) // g + 1)) for q in q_parts]


def _ffn_ranges(dims: DecoderDims, dies: int, group_size: int) -> list[range]:
    """Near-even MLP columns per die, in whole int4 groups (`group_size` 1 for float weights)."""
    units = dims.intermediate_size // group_size
    if units < dies:
        unit = f"int4 groups of {group_size}" if group_size > 1 else "columns"
        raise TyllmError(f"intermediate_size={dims.intermediate_size} gives {units} {unit}, "
                         f"fewer than {dies} dies: use at most {units} dies.")
    return [range(r.start * group_size, r.stop * group_size) for r in even_split(units, dies)]


def _check_group_size(dims: DecoderDims, group_size: int) -> None:
    """A quantized checkpoint's group size must divide the linears' input sizes."""
    sizes = {"hidden_size": dims.hidden_size, "intermediate_size": dims.intermediate_size}
    if bad := [f"{k}={v}" for k, v in sizes.items() if v % group_size]:
        raise TyllmError(f"int4 group_size={group_size} does not divide {', '.join(bad)}: the "
                         f"checkpoint's quantization_config does not match its config.json; "
                         f"re-quantize with a group size that divides both.")


def _check_head_groups(dims: DecoderDims, heads, group_size: int) -> None:
    """o_proj reads a die's heads x head_dim inputs: int4 needs whole groups there."""
    bad = [d for d, (q, _) in enumerate(heads) if len(q) * dims.head_dim % group_size]
    if bad:
        counts = [len(q) for q, _ in heads]
        multiple = group_size // math.gcd(group_size, dims.head_dim)
        raise TyllmError(f"Query heads per die {counts} x head_dim {dims.head_dim} are not whole "
                         f"int4 groups of {group_size} on dies {bad}: choose a die count that "
                         f"gives every die a multiple of {multiple} heads, or quantize with a "
                         f"group size dividing {dims.head_dim}.")


def plan_dies(dims: DecoderDims, dies: int, group_size: int = 1) -> list[DiePlan]:
    """`group_size`: the int4 group size of a quantized checkpoint (shards hold whole groups)."""
    if dies < 1:
        raise TyllmError(f"dev_count={dies} is invalid: use 1 or more dies.")
    if dies > dims.num_heads:
        raise TyllmError(f"Cannot split {dims.num_heads} attention heads across {dies} dies: "
                         f"use at most {dims.num_heads} dies.")
    _check_group_size(dims, group_size)
    heads = _head_ranges(dims, dies)
    _check_head_groups(dims, heads, group_size)
    ffn = _ffn_ranges(dims, dies, group_size)
    vocab = even_split(dims.vocab_size, dies)
    return [DiePlan(d, dies, heads[d][0], heads[d][1], ffn[d], vocab[d]) for d in range(dies)]
