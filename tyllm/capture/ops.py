"""`tyllm::all_reduce`: the collective each die graph calls after attention and after the MLP.

In eager torch it is the one-die identity (sum over a single die); compiled graphs lower it to the
packed function `tyllm.die_all_reduce`, which the runtime implements across dies.
"""

import torch

ALL_REDUCE_PACKED_FUNC = "tyllm.die_all_reduce"


@torch.library.custom_op("tyllm::all_reduce", mutates_args=())
def all_reduce(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@all_reduce.register_fake
def _all_reduce_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)
