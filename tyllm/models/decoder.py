"""One die's static-shape step of a Llama-family decoder (Llama, Qwen2, Qwen3).

A step takes M new tokens at positions start_pos .. start_pos+M-1 on top of a KV history held by
the host, and returns the logits of the last valid row and the M new K/V rows of every layer.
Shapes (per die):  tokens [M] int64 (or embeds [M, H]), start_pos [1] int64, last_index [1] int64,
k_cache / v_cache [L, KVl, S, D], history_mask [W] bool  ->  logits [1, Vl], new_k / new_v
[L, KVl, M, D]. A step attends over the first W <= S cached positions (history_mask[p]: position
p holds history, i.e. p < start_pos), so its cost follows W, not S. W is symbolic when captured
(one capture per M) and bound to each compiled KV window (tyllm.artifacts.windows). One sequence's
attention is the `tyllm::attention` op (tyllm.capture.ops), which a backend may lower to a
kernel whose cost follows the history the mask marks rather than W.
Rows past the valid ones are padding: they attend causally like the others, but nothing reads them.

Weights in panels (`panels` = P, what the backend's matmul kernel reads, `Target.weight_panels`):
a float linear weight [N, K] is stored as [N / P, K, P] (tyllm.models.panels), P outputs
contiguous at each k, and an int4 linear's packed bytes, scales and zero points likewise; the
graph reads them through a view the backend folds into the matmul.

Taps (tyllm.compare): `forward(..., taps={})` records intermediate values into the dict (per
layer `layers.{i}` -> {point: tensor}, see `record`); the production graphs never pass it.
"""

from dataclasses import dataclass

import torch
from torch import nn

from tyllm.capture.ops import all_reduce, attention, attention_rows, int4_linear
from tyllm.errors import TyllmError
from tyllm.models.dims import DecoderDims
from tyllm.models.panels import dense, panel_rows, panel_width, panelled
from tyllm.quant.int4 import SUFFIXES as INT4_PARTS
from tyllm.quant.int4 import Int4Scheme, dequantize_int4_fused
from tyllm.shard.plan import DiePlan


def frozen(*shape, dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype), requires_grad=False)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, dtype):
        super().__init__()
        self.weight = frozen(size, dtype=dtype)
        self.eps = eps

    def forward(self, x):
        # x is cast twice: with one cast feeding both the square and the scaling, a
        # half-precision graph ran the cast, the square and the reduction as three kernels
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        return self.weight * (x.to(torch.float32) * torch.rsqrt(variance + self.eps)).to(x.dtype)


class Linear(nn.Module):
    """`weight` [N, K], or [N / P, K, P] in panels of P outputs (when P divides N)."""

    def __init__(self, out_features: int, in_features: int, bias: bool, dtype,
                 panels: int | None = None):
        super().__init__()
        self.panels = panel_width(out_features, panels)
        self.weight = frozen(*panelled((out_features, in_features), self.panels), dtype=dtype)
        self.bias = frozen(out_features, dtype=dtype) if bias else None

    def forward(self, x):
        return nn.functional.linear(x, dense(self.weight, self.panels), self.bias)


class Int4Linear(nn.Module):
    """A linear with int4 weights (tyllm.quant.int4 layout), dequantized inside the graph.
    With `panels` P, qweight, scales and qzeros are each stored as [N / P, X, P] (the float
    weight's panel layout, tyllm.models.panels), so the backend's outer-product kernel reads
    P outputs' packed bytes, scales and zero points as one vector at each k. The weight is
    dequantized in float32 and the product accumulated there (the stored bytes are exact; no
    rounding of the dense weight to the activations' half precision). In panels it is the
    `tyllm::int4_linear` op, which a backend may lower to a kernel of its own."""

    def __init__(self, out_features: int, in_features: int, bias: bool, dtype, group_size: int,
                 panels: int | None = None):
        super().__init__()
        if in_features % group_size:
            raise TyllmError(f"A die's linear has {in_features} inputs, not a multiple of the "
                             f"int4 group size {group_size}: choose a die count that splits "
                             f"heads and MLP columns into whole groups.")
        self.group_size = group_size
        self.panels = panel_width(out_features, panels)
        groups = in_features // group_size
        self.qweight = frozen(*panelled((out_features, in_features // 2), self.panels),
                              dtype=torch.uint8)
        self.scales = frozen(*panelled((out_features, groups), self.panels), dtype=dtype)
        self.qzeros = frozen(*panelled((out_features, groups), self.panels), dtype=torch.uint8)
        self.bias = frozen(out_features, dtype=dtype) if bias else None

    def packed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """qweight, scales, qzeros as [N, X] (views of the panels)."""
        return tuple(dense(t, self.panels) for t in (self.qweight, self.scales, self.qzeros))

    def forward(self, x):
        if self.panels is None:
            w = dequantize_int4_fused(*self.packed(), self.group_size)
            bias = None if self.bias is None else self.bias.float()
            return nn.functional.linear(x.float(), w, bias).to(x.dtype)
        rows = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
        out = int4_linear(rows, self.qweight, self.scales, self.qzeros, self.bias,
                          self.group_size)
        return out if x.dim() == 2 else out.reshape(*x.shape[:-1], out.shape[-1])


def make_linear(out_features: int, in_features: int, bias: bool, dtype,
                int4: Int4Scheme | None, panels: int | None = None) -> nn.Module:
    if int4 is None:
        return Linear(out_features, in_features, bias, dtype, panels)
    return Int4Linear(out_features, in_features, bias, dtype, int4.group_size, panels)


def record(taps: dict | None, point: str, value: torch.Tensor) -> torch.Tensor:
    """Keeps `value` as tap point `point` when a tapped step is traced (tyllm.compare)."""
    if taps is not None:
        taps[point] = value
    return value


def causal_mask(seq_len: int) -> nn.Parameter:
    return nn.Parameter(torch.ones(seq_len, seq_len).tril().bool(), requires_grad=False)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x, cos, sin):
    # x: [heads, M, D]; cos/sin: [M, D]
    return x * cos + rotate_half(x) * sin


@dataclass(frozen=True)
class LayerCache:
    """Layer `index` of one sequence's caches ([layers, KV, C, D] each)."""

    k: torch.Tensor
    v: torch.Tensor
    index: int


class Attention(nn.Module):
    def __init__(self, dims: DecoderDims, plan: DiePlan, dtype, int4: Int4Scheme | None,
                 panels: int | None = None):
        super().__init__()
        d, h, kv = dims.head_dim, len(plan.q_heads), len(plan.kv_heads)
        self.heads, self.kv_heads, self.head_dim = h, kv, d
        self.group = plan.kv_group(dims.group_size)
        self.kv_of = list(plan.kv_index(dims.group_size))
        self.register_buffer("kv_index", torch.tensor(self.kv_of), persistent=False)
        hs, qkv_bias = dims.hidden_size, dims.qkv_bias
        self.q_proj = make_linear(h * d, hs, qkv_bias, dtype, int4, panels)
        self.k_proj = make_linear(kv * d, hs, qkv_bias, dtype, int4, panels)
        self.v_proj = make_linear(kv * d, hs, qkv_bias, dtype, int4, panels)
        self.o_proj = make_linear(hs, h * d, False, dtype, int4, panels)
        self.o_bias = frozen(dims.hidden_size, dtype=dtype) if dims.o_bias else None
        self.q_norm = RMSNorm(d, dims.rms_norm_eps, dtype) if dims.qk_norm else None
        self.k_norm = RMSNorm(d, dims.rms_norm_eps, dtype) if dims.qk_norm else None

    def project(self, x, proj, norm, heads):
        # x: [M, H] -> [heads, M, D]
        y = proj(x).view(x.shape[0], heads, self.head_dim)
        if norm is not None:
            y = norm(y)
        return y.transpose(0, 1)

    def group_kv(self, t):
        # [KVl, T, D] -> one KV head per query group: [G, T, D]
        return t if self.group is not None else torch.index_select(t, 0, self.kv_index)

    def forward(self, x, cos, sin, history, hist_mask, causal_mask, taps=None):
        """x [R, H]: one sequence's M rows (R = M; `history` is its LayerCache), or B
        sequences' rows one after the other (R = B*M; hist_mask is [B, W]; `history` is a list
        of B LayerCaches when M = 1, the rows' op on each sequence's own cache, else of B
        (k, v) windows)."""
        q = apply_rope(self.project(x, self.q_proj, self.q_norm, self.heads), cos, sin)
        k = apply_rope(self.project(x, self.k_proj, self.k_norm, self.kv_heads), cos, sin)
        v = self.project(x, self.v_proj, None, self.kv_heads)
        if isinstance(history, LayerCache):
            out = attention(q, k, v, history.k, history.v, hist_mask, history.index, self.kv_of)
        elif isinstance(history[0], LayerCache):  # B sequences of one row each: decode
            out = attention_rows(q, k, v, [c.k for c in history], [c.v for c in history],
                                 hist_mask, history[0].index, self.kv_of)
        else:
            k_hists, v_hists = zip(*history, strict=True)
            out = self.attend_rows(q, k, v, k_hists, v_hists, hist_mask, causal_mask)
        y = all_reduce(record(taps, "attention.partial", self.o_proj(out)))
        y = y if self.o_bias is None else y + self.o_bias
        return record(taps, "attention.output", y), k, v

    def attend_rows(self, q, k, v, k_hists, v_hists, hist_mask, causal_mask):
        """B sequences, each attending to its own history and its own new rows: q [h, B*M, D],
        new k/v [KVl, B*M, D], B histories [KVl, W, D], hist_mask [B, W] -> [B*M, h*D]. The
        sequences are a batch axis of the same bmm as `attend`: (sequence, group) pairs."""
        b, m, d = len(k_hists), causal_mask.shape[0], self.head_dim
        g = self.group or 1
        kh = torch.cat([self.group_kv(t) for t in k_hists])  # [B*G, W, D]
        vh = torch.cat([self.group_kv(t) for t in v_hists])
        groups = kh.shape[0] // b

        def per_sequence(t, rows):  # [heads, B*M, D] -> [B*heads', rows, D]
            return t.reshape(t.shape[0], b, m, d).transpose(0, 1).reshape(-1, rows, d)

        qg = per_sequence(q, g * m)  # [B*G, g*M, D]: rows are (g, m) as in `attend`
        kg, vg = per_sequence(self.group_kv(k), m), per_sequence(self.group_kv(v), m)
        scale = d**-0.5
        s_hist = torch.bmm(qg, kh.transpose(1, 2)) * scale  # [B*G, g*M, W]
        s_new = torch.bmm(qg, kg.transpose(1, 2)) * scale  # [B*G, g*M, M]
        neg = torch.finfo(s_hist.dtype).min
        rows = torch.arange(b).repeat_interleave(groups)
        s_hist = torch.where(torch.index_select(hist_mask, 0, rows).unsqueeze(1), s_hist, neg)
        s_new = torch.where(causal_mask.repeat(g, 1), s_new, neg)
        p = torch.softmax(torch.cat([s_hist, s_new], -1), -1, dtype=torch.float32).to(q.dtype)
        p_hist, p_new = p[..., : kh.shape[1]], p[..., kh.shape[1]:]
        out = torch.bmm(p_hist, vh) + torch.bmm(p_new, vg)  # [B*G, g*M, D]
        return out.reshape(b, self.heads, m, d).transpose(1, 2).reshape(b * m, -1)


class MLP(nn.Module):
    def __init__(self, dims: DecoderDims, plan: DiePlan, dtype, int4: Int4Scheme | None,
                 panels: int | None = None):
        super().__init__()
        f, hs = len(plan.ffn), dims.hidden_size
        self.gate_proj = make_linear(f, hs, dims.mlp_bias, dtype, int4, panels)
        self.up_proj = make_linear(f, hs, dims.mlp_bias, dtype, int4, panels)
        self.down_proj = make_linear(hs, f, False, dtype, int4, panels)
        self.down_bias = frozen(hs, dtype=dtype) if dims.mlp_bias else None

    def forward(self, x, taps=None):
        y = self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))
        y = all_reduce(record(taps, "mlp.partial", y))
        return record(taps, "mlp.output", y if self.down_bias is None else y + self.down_bias)


class Layer(nn.Module):
    def __init__(self, dims: DecoderDims, plan: DiePlan, dtype, int4: Int4Scheme | None,
                 panels: int | None = None):
        super().__init__()
        self.input_layernorm = RMSNorm(dims.hidden_size, dims.rms_norm_eps, dtype)
        self.self_attn = Attention(dims, plan, dtype, int4, panels)
        self.post_attention_layernorm = RMSNorm(dims.hidden_size, dims.rms_norm_eps, dtype)
        self.mlp = MLP(dims, plan, dtype, int4, panels)

    def forward(self, h, cos, sin, history, hist_mask, causal_mask, taps=None):
        a, k, v = self.self_attn(self.input_layernorm(h), cos, sin, history, hist_mask,
                                 causal_mask, taps)
        h = h + a
        return h + self.mlp(self.post_attention_layernorm(h), taps), k, v


class DecoderStep(nn.Module):
    """Parameters are the die's weights; `rope_*` and `causal_mask` are graph constants.
    With `int4`, the decoder linears hold int4 weights (embeddings and LM head stay float).
    `tied_head`: the die holds the whole vocabulary of a tied embedding, so its tokens are
    looked up in the LM head (one tensor, one parameter) and there is no `embed_tokens`."""

    def __init__(self, dims: DecoderDims, plan: DiePlan, *, seq_len: int, max_kv: int,
                 embedding_as_input: bool, dtype=torch.float32, rope_tables: bool = True,
                 int4: Int4Scheme | None = None, panels: int | None = None,
                 tied_head: bool = False):
        super().__init__()
        self.max_kv = max_kv
        self.embedding_as_input, self.tied_head = embedding_as_input, tied_head
        own_table = not (embedding_as_input or tied_head)
        self.embed_tokens = frozen(dims.vocab_size, dims.hidden_size,
                                   dtype=dtype) if own_table else None
        self.layers = nn.ModuleList(Layer(dims, plan, dtype, int4, panels)
                                    for _ in range(dims.num_layers))
        self.norm = RMSNorm(dims.hidden_size, dims.rms_norm_eps, dtype)
        self.head_panels = panel_width(len(plan.vocab), panels)
        self.lm_head = frozen(*panelled((len(plan.vocab), dims.hidden_size), self.head_panels),
                              dtype=dtype)
        self.rope_cos = frozen(max_kv, dims.head_dim, dtype=dtype) if rope_tables else None
        self.rope_sin = frozen(max_kv, dims.head_dim, dtype=dtype) if rope_tables else None
        self.causal_mask = causal_mask(seq_len)

    def embed(self, tokens):
        if self.embedding_as_input:
            return tokens
        if self.tied_head:
            return panel_rows(self.lm_head, tokens, self.head_panels)
        return nn.functional.embedding(tokens, self.embed_tokens)

    def forward(self, tokens, start_pos, last_index, k_cache, v_cache, history_mask,
                *row_caches, taps=None):
        """One sequence (start_pos [1]), or B sequences in one call (batched graphs): tokens
        [B*M] row-major, start_pos [B], last_index [B] (flat rows), history_mask [B, W], the
        caches of sequence 0 then `row_caches` = (k_cache, v_cache) of sequences 1..B-1."""
        offsets = torch.arange(self.causal_mask.shape[0], dtype=torch.int64)
        if start_pos.shape[0] == 1:
            pos = start_pos + offsets
        else:
            pos = (start_pos.unsqueeze(1) + offsets).reshape(-1)  # [B*M], sequence-major
        pos = torch.clamp(pos, 0, self.max_kv - 1)  # padding rows may overflow
        cos, sin = self.rope_cos[pos], self.rope_sin[pos]  # [R, D]
        return self.run(self.embed(tokens), cos, sin, last_index,
                        caches_of(k_cache, v_cache, row_caches), history_mask, taps=taps)

    def run(self, h, cos, sin, last_index, caches, history_mask, deepstack=None, taps=None):
        """The layers on embeddings h [R, H] with rope cos/sin [R, D]; `caches` is one (K, V)
        pair per sequence, each attending to its first W = history_mask.shape[-1] cached
        positions; `deepstack` [K, M, H] (Qwen3-VL) is added to the output of layers 0..K-1."""
        window = history_mask.shape[-1]
        record(taps, "embedding", h)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            if len(caches) == 1:
                history = LayerCache(*caches[0], i)
            elif self.causal_mask.shape[0] == 1:  # one row a sequence: each its own attention
                history = [LayerCache(k, v, i) for k, v in caches]
            else:  # slices, not k[i]: a select lowers to a copy of the layer's whole cache
                history = [(k[i:i + 1, :, :window].squeeze(0), v[i:i + 1, :, :window].squeeze(0))
                           for k, v in caches]
            layer_taps = None if taps is None else taps.setdefault(f"layers.{i}", {})
            h, k, v = layer(h, cos, sin, history, history_mask, self.causal_mask, layer_taps)
            record(layer_taps, "layer.output", h)  # before deepstack, as HF's layer returns it
            if deepstack is not None and i < deepstack.shape[0]:
                h = h + deepstack[i]
            new_k.append(k)
            new_v.append(v)
        h_last = torch.index_select(record(taps, "norm", self.norm(h)), 0, last_index)  # [B, H]
        logits = nn.functional.linear(h_last, dense(self.lm_head, self.head_panels))  # [B, Vl]
        return logits, torch.stack(new_k), torch.stack(new_v)


def caches_of(k_cache, v_cache, row_caches: tuple) -> list[tuple]:
    """(K, V) per sequence: the first pair, then the pairs of `row_caches` (k1, v1, k2, ...)."""
    rest = list(row_caches)
    return [(k_cache, v_cache), *zip(rest[0::2], rest[1::2], strict=True)]


def panel_widths(step: DecoderStep) -> dict[str, int]:
    """Parameter name -> panel width, for every weight the step stores in panels."""
    widths = {f"{name}.weight": m.panels for name, m in step.named_modules()
              if isinstance(m, Linear) and m.panels}
    widths |= {f"{name}.{part}": m.panels for name, m in step.named_modules()
               if isinstance(m, Int4Linear) and m.panels for part in INT4_PARTS}
    return widths | ({"lm_head": step.head_panels} if step.head_panels else {})
