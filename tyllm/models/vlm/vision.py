"""One die's share of a Qwen-VL vision tower, for one fixed image grid (one temporal slice).

Built from the HF vision module itself: norms, patch mergers and activations are the HF modules
(replicated on every die); attention is split by heads and the MLP by intermediate columns, each
followed by the die all-reduce. Everything that depends on the grid only (rotary cos/sin, learned
position embeddings, the window order and window masks of Qwen2.5-VL) is computed once here by
transformers' own helpers and kept as graph constants, so the graph has static shapes.
Input: pixel_values [N, C*T*P*P] (the HF processor's rows for one temporal slice). Outputs: embeds
[N / merge^2, out_hidden] and, for Qwen3-VL, deepstack [K, N / merge^2, out_hidden].
"""

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import vision_utils

from tyllm.capture.ops import all_reduce
from tyllm.models.decoder import record, rotate_half
from tyllm.shard.plan import even_split

GRID_CONSTANTS = ("rope_cos", "rope_sin", "pos_embeds", "window_index", "reverse_index",
                  "window_mask")


@dataclass(frozen=True)
class VisionPlan:
    die: int
    dies: int
    heads: range
    ffn: range


@dataclass(frozen=True)
class VisionSizes:
    width: int  # the tower's hidden size
    intermediate: int  # its MLP size
    out: int  # merged features (the language model's hidden size)


def vision_sizes(v) -> VisionSizes:
    """Qwen2.5-VL / Qwen3-VL name them hidden_size / intermediate_size / out_hidden_size;
    Qwen2-VL embed_dim / embed_dim * mlp_ratio / hidden_size."""
    if hasattr(v, "out_hidden_size"):
        return VisionSizes(v.hidden_size, v.intermediate_size, v.out_hidden_size)
    return VisionSizes(v.embed_dim, int(v.embed_dim * v.mlp_ratio), v.hidden_size)


def plan_vision(num_heads: int, intermediate: int, dies: int) -> list[VisionPlan]:
    heads, ffn = even_split(num_heads, dies), even_split(intermediate, dies)
    return [VisionPlan(d, dies, heads[d], ffn[d]) for d in range(dies)]


def constant(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=False)


def frozen_copy(module: nn.Module) -> nn.Module:
    module = copy.deepcopy(module)
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class VisionAttention(nn.Module):
    def __init__(self, hf_attn, plan: VisionPlan):
        super().__init__()
        heads, dim = hf_attn.num_heads, hf_attn.qkv.weight.shape[1]
        hd = dim // heads
        self.heads, self.head_dim, self.scale = len(plan.heads), hd, hd**-0.5
        sel = slice(plan.heads.start, plan.heads.stop)
        qkv = hf_attn.qkv.weight.view(3, heads, hd, dim)
        self.qkv_weight = constant(qkv[:, sel].reshape(-1, dim))
        self.qkv_bias = constant(hf_attn.qkv.bias.view(3, heads, hd)[:, sel].reshape(-1))
        self.proj_weight = constant(hf_attn.proj.weight[:, sel.start * hd:sel.stop * hd])
        self.proj_bias = constant(hf_attn.proj.bias)

    def forward(self, x, cos, sin, mask, taps=None):
        n = x.shape[0]
        qkv = nn.functional.linear(x, self.qkv_weight, self.qkv_bias)
        qkv = qkv.view(n, 3, self.heads, self.head_dim).permute(1, 2, 0, 3)  # [3, h, N, hd]
        q, k, v = qkv[0], qkv[1], qkv[2]
        q, k = q.float(), k.float()  # rotary in fp32, like HF
        q = (q * cos + rotate_half(q) * sin).to(x.dtype)
        k = (k * cos + rotate_half(k) * sin).to(x.dtype)
        scores = torch.bmm(q, k.transpose(1, 2)) * self.scale  # [h, N, N]
        if mask is not None:
            scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
        p = torch.softmax(scores, -1, dtype=torch.float32).to(x.dtype)
        out = torch.bmm(p, v).transpose(0, 1).reshape(n, -1)
        y = all_reduce(record(taps, "attention.partial", nn.functional.linear(out,
                                                                             self.proj_weight)))
        return record(taps, "attention.output", y + self.proj_bias)


MLP_NAMES = (  # (input projections, output projection, activation) of the HF vision MLPs
    (("gate_proj", "up_proj"), "down_proj", "act_fn"),  # Qwen2.5-VL (gated)
    (("linear_fc1",), "linear_fc2", "act_fn"),  # Qwen3-VL
    (("fc1",), "fc2", "act"),  # Qwen2-VL
)


class VisionMLP(nn.Module):
    """One die's MLP columns: gated (gate * up -> down) or plain (fc1 -> fc2)."""

    def __init__(self, hf_mlp, plan: VisionPlan):
        super().__init__()
        cols = slice(plan.ffn.start, plan.ffn.stop)
        ins, out, act = next(names for names in MLP_NAMES if hasattr(hf_mlp, names[1]))
        self.gated = len(ins) == 2
        out = getattr(hf_mlp, out)
        self.in_weights = nn.ParameterList(constant(getattr(hf_mlp, n).weight[cols]) for n in ins)
        self.in_biases = nn.ParameterList(constant(getattr(hf_mlp, n).bias[cols]) for n in ins)
        self.out_weight = constant(out.weight[:, cols])
        self.out_bias = constant(out.bias)
        self.act = getattr(hf_mlp, act)

    def forward(self, x, taps=None):
        first = nn.functional.linear(x, self.in_weights[0], self.in_biases[0])
        hidden = self.act(first)
        if self.gated:
            hidden = hidden * nn.functional.linear(x, self.in_weights[1], self.in_biases[1])
        y = all_reduce(record(taps, "mlp.partial", nn.functional.linear(hidden, self.out_weight)))
        return record(taps, "mlp.output", y + self.out_bias)


class VisionBlock(nn.Module):
    def __init__(self, hf_block, plan: VisionPlan, windowed: bool):
        super().__init__()
        self.norm1, self.norm2 = frozen_copy(hf_block.norm1), frozen_copy(hf_block.norm2)
        self.attn = VisionAttention(hf_block.attn, plan)
        self.mlp = VisionMLP(hf_block.mlp, plan)
        self.windowed = windowed

    def forward(self, h, cos, sin, window_mask, taps=None):
        h = h + self.attn(self.norm1(h), cos, sin, window_mask if self.windowed else None, taps)
        return record(taps, "block.output", h + self.mlp(self.norm2(h), taps))


def window_layout(hf, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2.5-VL: the window order of merge units and the same-window mask [N, N] in that order."""
    cfg = hf.config
    index, cu = vision_utils.get_vision_window_index(grid, cfg.spatial_merge_size,
                                                     cfg.window_size, cfg.patch_size)
    n = int(grid.prod())
    segment = torch.searchsorted(cu[1:].to(torch.int64), torch.arange(n), right=True)
    return index, segment[:, None] == segment[None, :]


def merge_order(t: torch.Tensor, index: torch.Tensor, unit: int) -> torch.Tensor:
    return t.reshape(-1, unit, t.shape[-1])[index].reshape(t.shape)


class VisionDieStep(nn.Module):
    def __init__(self, hf, plan: VisionPlan, grid_hw: tuple[int, int], dtype=torch.float32):
        super().__init__()
        cfg = hf.config
        grid = torch.tensor([[1, *grid_hw]])
        self.unit = cfg.spatial_merge_size**2
        proj = hf.patch_embed.proj
        self.patch_weight = constant(proj.weight.reshape(proj.weight.shape[0], -1))
        self.patch_bias = constant(proj.bias) if proj.bias is not None else None
        positions = vision_utils.get_vision_position_ids(grid, cfg.spatial_merge_size)
        cos, sin = hf.rotary_pos_emb(self.patch_weight, positions)
        self.pos_embeds = self._position_embeddings(hf, grid)
        windowed = set()
        self.window_index = self.reverse_index = self.window_mask = None
        if getattr(cfg, "fullatt_block_indexes", None) is not None:
            index, mask = window_layout(hf, grid)
            self.window_index, self.reverse_index = constant(index), constant(torch.argsort(index))
            self.window_mask = constant(mask)
            cos, sin = merge_order(cos, index, self.unit), merge_order(sin, index, self.unit)
            windowed = set(range(cfg.depth)) - set(cfg.fullatt_block_indexes)
        self.rope_cos, self.rope_sin = constant(cos), constant(sin)
        self.blocks = nn.ModuleList(VisionBlock(b, plan, i in windowed)
                                    for i, b in enumerate(hf.blocks))
        self.merger = frozen_copy(hf.merger)
        self.deepstack_layers = list(getattr(cfg, "deepstack_visual_indexes", None) or [])
        self.deepstack = nn.ModuleList(frozen_copy(m) for m in
                                       getattr(hf, "deepstack_merger_list", []))
        self.to(dtype)
        self.rope_cos.data, self.rope_sin.data = cos.float(), sin.float()

    @staticmethod
    def _position_embeddings(hf, grid):
        if not hasattr(hf, "pos_embed"):
            return None
        index, weight = vision_utils.get_vision_interpolation_indices_and_weights(
            grid, num_grid_per_side=hf.num_grid_per_side, mode=hf.interpolation_mode,
            align_corners=hf.interpolation_align_corners,
            spatial_merge_size=hf.config.spatial_merge_size)
        with torch.no_grad():
            return constant((hf.pos_embed(index) * weight[:, :, None]).sum(1))

    @property
    def output_names(self) -> tuple[str, ...]:
        return ("embeds", "deepstack") if self.deepstack_layers else ("embeds",)

    def forward(self, pixel_values, taps=None):
        """`taps` (tyllm.compare): records the blocks' input, each block's points
        (`blocks.{i}` -> {point: tensor}), the deepstack mergers' and the merger's outputs."""
        h = nn.functional.linear(pixel_values.to(self.patch_weight.dtype), self.patch_weight,
                                 self.patch_bias)
        if self.pos_embeds is not None:
            h = h + self.pos_embeds
        if self.window_index is not None:
            h = h.reshape(-1, self.unit, h.shape[-1])[self.window_index].reshape(h.shape)
        record(taps, "input", h)
        features = []
        for i, block in enumerate(self.blocks):
            block_taps = None if taps is None else taps.setdefault(f"blocks.{i}", {})
            h = block(h, self.rope_cos, self.rope_sin, self.window_mask, block_taps)
            if i in self.deepstack_layers:
                j = self.deepstack_layers.index(i)
                features.append(record(taps, f"deepstack.{j}", self.deepstack[j](h)))
        out = record(taps, "merger", self.merger(h))
        if self.reverse_index is not None:
            out = out[self.reverse_index]
        return (out, torch.stack(features)) if features else (out,)
