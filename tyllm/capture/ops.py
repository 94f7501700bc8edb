"""The custom ops of the die graphs: `tyllm::all_reduce` (the collective each die graph calls
after attention and after the MLP), `tyllm::attention` (and `tyllm::attention_rows`, B
sequences of one row) and `tyllm::int4_linear` (kernels a
backend may write for its own hardware; each op's reference is its meaning).

In eager torch it is the one-die identity (sum over a single die). The emulated CPU backend lowers
it to the packed function `tyllm.die_all_reduce` (its wrapper of the runtime's all-reduce across
dies, backends/emulated_cpu/all_reduce.py); the ONNX reference backend calls the runtime's
all-reduce between the pieces of its graphs.
"""

import torch

from tyllm.models.panels import dense
from tyllm.quant.int4 import dequantize_int4_fused

ALL_REDUCE_PACKED_FUNC = "tyllm.die_all_reduce"


@torch.library.custom_op("tyllm::all_reduce", mutates_args=())
def all_reduce(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@all_reduce.register_fake
def _all_reduce_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("tyllm::attention", mutates_args=())
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
              v_cache: torch.Tensor, history_mask: torch.Tensor, layer: int,
              kv_of: list[int]) -> torch.Tensor:
    """One sequence's attention: q [heads, M, D] (query head h reads KV head kv_of[h]), its
    new k/v [KV, M, D], each row attending to the history positions of layer `layer` of the
    caches [layers, KV, C, D] that history_mask [W] marks, and causally to the new rows.
    Returns [M, heads * D]. Backends lower it to their own kernel; this is its meaning."""
    return attention_reference(q, k, v, k_cache, v_cache, history_mask, layer, kv_of)


@attention.register_fake
def _attention_fake(q, k, v, k_cache, v_cache, history_mask, layer, kv_of):
    return q.new_empty(q.shape[1], q.shape[0] * q.shape[2])


def attention_reference(q, k, v, k_cache, v_cache, history_mask, layer: int,
                        kv_of: list[int]) -> torch.Tensor:
    """`attention` in plain torch ops (the ONNX twin's decomposition): scores over the window
    and the new rows, masked, softmax in float32, weighted sums. Query heads sharing a KV head
    are rows of one matmul when each KV head serves a contiguous, equal group."""
    heads, m, d = q.shape
    window = history_mask.shape[-1]
    k_hist = k_cache[layer:layer + 1, :, :window].squeeze(0)  # [KV, W, D]
    v_hist = v_cache[layer:layer + 1, :, :window].squeeze(0)
    group = heads // k.shape[0]
    if list(kv_of) != [h // group for h in range(heads)]:
        index = torch.tensor(kv_of, dtype=torch.int64)
        k_hist, v_hist = (torch.index_select(t, 0, index) for t in (k_hist, v_hist))
        k, v, group = torch.index_select(k, 0, index), torch.index_select(v, 0, index), 1
    qg = q.reshape(k.shape[0], group * m, d)  # rows are (head in group, m)
    scale = d**-0.5
    # Nothing with the window axis W is reshaped: W is symbolic when captured.
    s_hist = torch.bmm(qg, k_hist.transpose(1, 2)) * scale  # [G, g*M, W]
    s_new = torch.bmm(qg, k.transpose(1, 2)) * scale  # [G, g*M, M]
    neg = torch.finfo(s_hist.dtype).min
    causal = torch.ones(m, m, dtype=torch.bool).tril().repeat(group, 1)
    s_hist = torch.where(history_mask, s_hist, neg)
    s_new = torch.where(causal, s_new, neg)
    p = torch.softmax(torch.cat([s_hist, s_new], -1), -1, dtype=torch.float32).to(q.dtype)
    out = torch.bmm(p[..., :window], v_hist) + torch.bmm(p[..., window:], v)  # [G, g*M, D]
    return out.reshape(heads, m, d).transpose(0, 1).reshape(m, heads * d)


@torch.library.custom_op("tyllm::attention_rows", mutates_args=())
def attention_rows(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_caches: list[torch.Tensor],
                   v_caches: list[torch.Tensor], history_mask: torch.Tensor, layer: int,
                   kv_of: list[int]) -> torch.Tensor:
    """B sequences of one new row each (batched decode): q [heads, B, D], new k/v [KV, B, D],
    sequence b attending to its own caches k_caches[b] / v_caches[b] (layer `layer`) where
    history_mask[b] [B, W] marks them. Returns [B, heads * D]: `attention` of each sequence,
    one after the other (its reference); a backend may run them in one kernel."""
    return attention_rows_reference(q, k, v, k_caches, v_caches, history_mask, layer, kv_of)


@attention_rows.register_fake
def _attention_rows_fake(q, k, v, k_caches, v_caches, history_mask, layer, kv_of):
    return q.new_empty(q.shape[1], q.shape[0] * q.shape[2])


def attention_rows_reference(q, k, v, k_caches, v_caches, history_mask, layer: int,
                             kv_of: list[int]) -> torch.Tensor:
    return torch.cat([attention_reference(q[:, b:b + 1], k[:, b:b + 1], v[:, b:b + 1], kc, vc,
                                          history_mask[b], layer, kv_of)
                      for b, (kc, vc) in enumerate(zip(k_caches, v_caches, strict=True))])


@torch.library.custom_op("tyllm::int4_linear", mutates_args=())
def int4_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                qzeros: torch.Tensor, bias: torch.Tensor | None, group_size: int) -> torch.Tensor:
    """x [rows, K] @ W^T + bias -> [rows, N] in x's dtype, for an int4 weight in panels of P
    outputs (tyllm.quant.int4's layout, each tensor as [N / P, X, P]: bytes, scales, zero
    points). The weight and the sums are float32 (see `int4_linear_reference`)."""
    return int4_linear_reference(x, qweight, scales, qzeros, bias, group_size)


@int4_linear.register_fake
def _int4_linear_fake(x, qweight, scales, qzeros, bias, group_size):
    return x.new_empty(x.shape[0], qweight.shape[0] * qweight.shape[2])


def int4_linear_reference(x, qweight, scales, qzeros, bias, group_size: int) -> torch.Tensor:
    """`int4_linear` in plain torch ops: the dense float32 weight (dequantized as
    `dequantize_int4_fused` computes it), the product in float32, one rounding to x's dtype."""
    panels = qweight.shape[-1]
    weight = dequantize_int4_fused(*(dense(t, panels) for t in (qweight, scales, qzeros)),
                                   group_size)
    bias = None if bias is None else bias.float()
    return torch.nn.functional.linear(x.float(), weight, bias).to(x.dtype)
