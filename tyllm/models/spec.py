"""What the compiler needs to know about one architecture."""

from collections.abc import Callable
from dataclasses import dataclass

from tyllm.models.dims import DecoderDims
from tyllm.shard.spec import Replicate, ShardDim


@dataclass(frozen=True)
class WeightSpec:
    """Where a step parameter comes from in the HF checkpoint, and how it is sharded."""

    hf_name: str
    shard: Replicate | ShardDim


@dataclass(frozen=True)
class AwqLayout:
    """How AWQ (tyllm/quant/layers.py) walks one HF decoder layer of this architecture."""

    captured: tuple[str, ...]  # modules whose inputs are recorded
    scale_groups: Callable[[object], list]  # layer -> [(prev op, linears, captured input)]
    inputs_of: dict[str, str]  # linear short name -> the captured input it sees
    no_clip: tuple[str, ...] = ()  # linears never clipped (q/k: attention logits)


@dataclass(frozen=True)
class ArchSpec:
    name: str
    hf_architectures: tuple[str, ...]
    dims_from_config: Callable[[object], DecoderDims]
    weight_table: Callable[[DecoderDims, bool], dict[str, WeightSpec]]
    rotary_embedding: Callable[[object], object]  # HF config -> HF rotary embedding module
    awq: AwqLayout | None = None  # None: tyllm's AWQ does not quantize this architecture
