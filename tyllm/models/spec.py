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
class ArchSpec:
    name: str
    hf_architectures: tuple[str, ...]
    dims_from_config: Callable[[object], DecoderDims]
    weight_table: Callable[[DecoderDims, bool], dict[str, WeightSpec]]
    rotary_embedding: Callable[[object], object]  # HF config -> HF rotary embedding module
