"""Tensor-parallel sharding: which slice of every weight each die holds, declared as data."""

from tyllm.shard.plan import DiePlan, plan_dies
from tyllm.shard.spec import Replicate, ShardDim, shard_slices

__all__ = ["DiePlan", "Replicate", "ShardDim", "plan_dies", "shard_slices"]
