"""The multimodal rope graph (`mrope/`): 3-axis positions (temporal, height, width) -> cos/sin.

Every rotary frequency belongs to one axis; which one is the model's own layout (Qwen2.5-VL:
contiguous sections, Qwen3-VL: interleaved). It is read from the HF rotary class itself by
recomposing axis labels, so the graph follows transformers exactly.
"""

import torch
from torch import nn

from tyllm.errors import TyllmError
from tyllm.models.decoder import frozen


def axis_of_dim(rotary) -> torch.Tensor:
    """For each of the head_dim rope channels, the position axis (0 t, 1 h, 2 w) it rotates by."""
    half = rotary.inv_freq.shape[0]
    labels = torch.arange(3, dtype=torch.float32).view(3, 1, 1).expand(3, 1, half).clone()
    return rotary.recomposition_frequencies(labels)[0].round().to(torch.int64)


class MropeStep(nn.Module):
    """position_ids [3, M] int64 -> cos, sin [M, head_dim] (fp32, scaled like HF)."""

    def __init__(self, rotary, seq_len: int, dtype=torch.float32):
        super().__init__()
        if rotary.rope_type in ("dynamic", "longrope"):
            raise TyllmError(f"rope_type={rotary.rope_type!r} rescales frequencies with the "
                             f"sequence length at run time; tyllm compiles static rope tables. "
                             f"Use a checkpoint with default, linear or yarn rope.")
        axis = axis_of_dim(rotary)
        half = rotary.inv_freq.shape[0]
        self.inv_freq = frozen(half, dtype=torch.float32)
        self.inv_freq.data.copy_(rotary.inv_freq.float())
        # channel c of the output reads frequency c % half of axis axis[c]
        self.axis_index = nn.Parameter(axis.view(1, 1, -1).expand(1, seq_len, -1).clone(),
                                       requires_grad=False)
        self.scale = float(rotary.attention_scaling)
        self.out_dtype = dtype

    def forward(self, position_ids):
        freqs = position_ids.to(torch.float32).unsqueeze(-1) * self.inv_freq  # [3, M, D/2]
        emb = torch.cat([freqs, freqs], dim=-1)  # [3, M, D]
        angle = torch.gather(emb, 0, self.axis_index)[0]  # [M, D]
        cos = (torch.cos(angle) * self.scale).to(self.out_dtype)
        sin = (torch.sin(angle) * self.scale).to(self.out_dtype)
        return cos, sin
