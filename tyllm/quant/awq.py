"""Activation-aware weight quantization (AWQ, Lin et al. 2023), layer by layer, on CPU.

For each decoder layer and each group of linears that read the same input (q/k/v after the
input norm, o after v when shapes allow, gate/up after the post-attention norm, down after up):
1. search a per-input-channel scale s = mean|x|^r / mean|w|^(1-r) over a grid of r, keeping the
   one whose round-to-nearest int4 weights (W·s quantized, then /s) best reproduce the group's
   outputs on calibration activations; fold 1/s into the op before (norm weight or the previous
   linear's rows) and s into the linears: the float function is unchanged;
2. optionally search, per output row and group, a clipping range that minimises the output error
   of the quantized weight (all linears but q and k);
3. quantize group-wise with zero points. The next layer is calibrated on this layer's output.
"""

from dataclasses import dataclass

import torch
from torch import nn

from tyllm.quant.groups import dequantize, fake_quantize, grouped, quantize


@dataclass(frozen=True)
class AwqConfig:
    bits: int = 4
    group_size: int = 128
    zero_point: bool = True
    apply_clip: bool = True
    n_grid: int = 20
    max_shrink: float = 0.5
    max_search_tokens: int = 4096
    max_clip_tokens: int = 512


def rows_sample(x: torch.Tensor, limit: int) -> torch.Tensor:
    x = x.reshape(-1, x.shape[-1])
    return x if len(x) <= limit else x[torch.linspace(0, len(x) - 1, limit).long()]


def _outputs(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([x @ w.t() for w in weights], dim=-1)


def search_scales(x: torch.Tensor, linears: list[nn.Linear], cfg: AwqConfig) -> torch.Tensor:
    """The scale per input channel that minimises the quantized group's output error."""
    weights = [fc.weight.detach().float() for fc in linears]
    w = torch.cat(weights, 0)
    g = grouped(w.abs(), cfg.group_size)
    w_mean = (g / (g.amax(-1, keepdim=True) + 1e-6)).reshape(w.shape).mean(0)
    x_mean = x.abs().mean(0)
    reference = _outputs(x, weights)
    best, best_loss = torch.ones_like(x_mean), float("inf")
    for i in range(cfg.n_grid):
        r = i / cfg.n_grid
        s = (x_mean.pow(r) / (w_mean.pow(1 - r) + 1e-4)).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        trial = [fake_quantize(wi * s, cfg.group_size, cfg.bits) / s for wi in weights]
        loss = float((reference - _outputs(x, trial)).pow(2).mean())
        if loss < best_loss:
            best, best_loss = s, loss
    return best


@torch.no_grad()
def fold_scales(prev: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    """prev's output / s, the linears' inputs * s: the float function stays the same."""
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s.view(-1, 1).to(prev.weight.dtype))
        if prev.bias is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
    else:  # RMSNorm-style: y = weight * normalised(x)
        prev.weight.div_(s.to(prev.weight.dtype))
    for fc in linears:
        fc.weight.mul_(s.view(1, -1).to(fc.weight.dtype))


@torch.no_grad()
def search_clip(x: torch.Tensor, w: torch.Tensor, cfg: AwqConfig, rows_per_batch: int = 64):
    """Per (row, group) max |w| that minimises the quantized output error: [out, groups]."""
    xg = grouped(x, cfg.group_size).permute(1, 0, 2)  # [groups, tokens, g]
    best_max = []
    for start in range(0, w.shape[0], rows_per_batch):
        wg = grouped(w[start:start + rows_per_batch].float(), cfg.group_size)  # [o, G, g]
        reference = torch.einsum("gtc,ogc->ogt", xg, wg)
        org_max = wg.abs().amax(-1)
        best, best_err = org_max.clone(), torch.full_like(org_max, float("inf"))
        for i in range(int(cfg.max_shrink * cfg.n_grid)):
            max_val = org_max * (1 - i / cfg.n_grid)
            clipped = wg.clamp(-max_val[..., None], max_val[..., None]).reshape(len(wg), -1)
            q = grouped(fake_quantize(clipped, cfg.group_size, cfg.bits), cfg.group_size)
            err = (torch.einsum("gtc,ogc->ogt", xg, q) - reference).pow(2).mean(-1)
            better = err < best_err
            best_err, best = torch.where(better, err, best_err), torch.where(better, max_val, best)
        best_max.append(best)
    return torch.cat(best_max)


@torch.no_grad()
def apply_clip(fc: nn.Linear, max_val: torch.Tensor, group_size: int) -> None:
    g = grouped(fc.weight.data.float(), group_size)
    clipped = g.clamp(-max_val[..., None], max_val[..., None]).reshape(fc.weight.shape)
    fc.weight.copy_(clipped.to(fc.weight.dtype))


@torch.no_grad()
def quantize_linear(fc: nn.Linear, cfg: AwqConfig) -> dict:
    """Replaces fc's weight by its int4 round trip; returns the integers, scales and zeros."""
    q, scales, zeros = quantize(fc.weight.data, cfg.group_size, cfg.bits)
    fc.weight.copy_(dequantize(q, scales, zeros).to(fc.weight.dtype))
    return {"q": q, "scales": scales, "zeros": zeros}
