"""The attention of a few new rows (`tyllm::attention` at decode, a short chunk, a speculative
verify step), written for the host CPU.

The kernel of many rows (attention.py) transposes the history's keys once a call so that its
score tiles are outer products; with a few rows that transposition costs more than the
attention (a scalar copy of every cached key per call, 10x the time of reading the cache at
1000 positions). Here a task is one query head and all the rows, and reads the cache as it
lies, each cached key and value row converted once for all the rows:

1. a score is a dot product along the head dim: `DV`-lane partial sums, then a halving tree;
2. each row's max, then exp(score - max) in place and its sum, a vector at a time;
3. probabilities x values, each cached value row scaled and added, vectorised along the head
   dim.

Masked history positions (holes in the mask) score `NEG` and weigh 0, as do the new rows after
a row's own; the history length is read from the mask at run time, so the cost follows the
history, not the window.
"""

from tvm import tirx
from tvm.script import tirx as T
from tyllm.backends.emulated_cpu.attention import (
    LANES,
    NEG,
    fast_exp,
    history_length,
    kv_head_of,
    vector_lanes,
)
from tyllm.backends.emulated_cpu.generated import branches, parse_kernel

FEW_ROWS = 8  # up to this many rows; more go to the transposing kernel (attention.py)


def few_rows_attention_kernel(kv_of: tuple[int, ...], kv_heads: int, rows: int, head_dim: int,
                              layers: int, cache: int, dtype: str,
                              sequences: int | None = None) -> tirx.PrimFunc:
    """out[m, h*D:(h+1)*D] = softmax(q_h k^T / sqrt(D)) v for `rows` new rows: q [heads, M,
    D] (query head h reads KV head kv_of[h]), new k/v [kv_heads, M, D], the caches [layers,
    kv_heads, cache, D] read at `layer` for the history positions the mask [W] marks, each row
    attending to its own and earlier new rows. With `sequences` = B: B sequences of one row
    each in one launch (`sequences_kernel`)."""
    H, KV, M, D, L, C = len(kv_of), kv_heads, rows, head_dim, layers, cache
    DV = vector_lanes(D)  # lanes of a partial-sum vector
    ND = D // DV
    scale = float(D) ** -0.5
    f32 = "float32"

    def load(x):
        return x if dtype == f32 else T.Cast(f32, x)

    @T.macro
    def lane_sum(part):
        """part[0] = the sum of part's DV lanes (a halving tree)."""
        if DV >= 16:
            for c in T.vectorized(T.int64(8)):
                part[c] = part[c] + part[c + 8]
        if DV >= 8:
            for c in T.vectorized(T.int64(4)):
                part[c] = part[c] + part[c + 4]
        if DV >= 4:
            for c in T.vectorized(T.int64(2)):
                part[c] = part[c] + part[c + 2]
        if DV >= 2:
            part[0] = part[0] + part[1]

    @T.macro
    def dot(qs, r, key, part):
        """part[0] = q row r . key (both float32, q already scaled)."""
        for c in T.vectorized(T.int64(DV)):
            part[c] = qs[r, c] * key[c]
        for dv in T.unroll(T.int64(1), T.int64(ND)):
            for c in T.vectorized(T.int64(DV)):
                part[c] = part[c] + qs[r, dv * DV + c] * key[dv * DV + c]
        lane_sum(part)

    @T.macro
    def head(q, k, v, kc, vc, mask, W, nh, layer, out, h):
        """Query head h of one sequence: its rows of q / k / v / out, its caches and mask, the
        history length nh."""
        blocks = T.bind((nh + M + LANES - 1) // LANES)  # score vectors a row
        s = T.alloc_buffer((M, (W + M + LANES - 1) // LANES * LANES), f32)
        qs = T.decl_buffer((M, D), f32, scope="global")
        row = T.decl_buffer((D,), f32, scope="global")  # a key or value row, converted
        part = T.decl_buffer((DV,), f32, scope="global")
        acc = T.decl_buffer((M, D), f32, scope="global")
        lanes = T.decl_buffer((LANES,), f32, scope="global")
        total = T.decl_buffer((M, 2), f32, scope="global")  # each row's max and sum
        g = T.bind(kv_head_of(h, kv_of))
        for r in range(T.int64(M)):
            for d in T.vectorized(T.int64(D)):
                qs[r, d] = load(q[h, r, d]) * T.float32(scale)
        # 1. scores: the history's keys, then the new ones (causal)
        for j in range(nh):
            for d in T.vectorized(T.int64(D)):
                row[d] = load(kc[layer, g, j, d])
            for r in T.unroll(T.int64(M)):
                dot(qs, r, row, part)
                s[r, j] = T.Select(mask[j], part[0], T.float32(NEG))
        for t in range(T.int64(M)):
            for d in T.vectorized(T.int64(D)):
                row[d] = load(k[g, t, d])
            for r in T.unroll(T.int64(M)):
                dot(qs, r, row, part)
                s[r, nh + t] = T.Select(t <= r, part[0], T.float32(NEG))
        for r in range(T.int64(M)):
            for j in range(nh + M, blocks * LANES):
                s[r, j] = T.float32(NEG)
        # 2. each row's max, exp and sum, a vector of scores at a time
        for r in range(T.int64(M)):
            for c in T.vectorized(T.int64(LANES)):
                lanes[c] = T.float32(NEG)
            for b in range(blocks):
                for c in T.vectorized(T.int64(LANES)):
                    lanes[c] = T.max(lanes[c], s[r, b * LANES + c])
            total[r, 0] = T.float32(NEG)
            for c in range(T.int64(LANES)):
                total[r, 0] = T.max(total[r, 0], lanes[c])
            for c in T.vectorized(T.int64(LANES)):
                lanes[c] = T.float32(0)
            for b in range(blocks):
                for c in T.vectorized(T.int64(LANES)):
                    s[r, b * LANES + c] = fast_exp(s[r, b * LANES + c] - total[r, 0])
                    lanes[c] = lanes[c] + s[r, b * LANES + c]
            total[r, 1] = T.float32(0)
            for c in range(T.int64(LANES)):
                total[r, 1] = total[r, 1] + lanes[c]
        # 3. probabilities x values: the history's, then the new rows'
        for r in range(T.int64(M)):
            for d in T.vectorized(T.int64(D)):
                acc[r, d] = T.float32(0)
        for j in range(nh):
            for d in T.vectorized(T.int64(D)):
                row[d] = load(vc[layer, g, j, d])
            for r in T.unroll(T.int64(M)):
                for d in T.vectorized(T.int64(D)):
                    acc[r, d] = acc[r, d] + s[r, j] * row[d]
        for t in range(T.int64(M)):
            for d in T.vectorized(T.int64(D)):
                row[d] = load(v[g, t, d])
            for r in T.unroll(T.int64(M)):
                for d in T.vectorized(T.int64(D)):
                    acc[r, d] = acc[r, d] + s[r, nh + t] * row[d]
        for r in range(T.int64(M)):
            for d in T.vectorized(T.int64(D)):
                out[r, h * D + d] = T.Cast(dtype, acc[r, d] / total[r, 1])

    if sequences is not None:
        return sequences_kernel(sequences, head, H, KV, D, L, C, dtype)

    @T.prim_func
    def kernel(q: T.Buffer((H, M, D), dtype), k: T.Buffer((KV, M, D), dtype),
               v: T.Buffer((KV, M, D), dtype), kc: T.Buffer((L, KV, C, D), dtype),
               vc: T.Buffer((L, KV, C, D), dtype), mask_handle: T.handle, layer: T.int64,
               out: T.Buffer((M, H * D), dtype)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        W = T.int64()
        mask = T.match_buffer(mask_handle, (W,), "bool")
        last = T.alloc_buffer((1,), "int64", scope="global")
        history_length(mask, W, last)
        nh = T.bind(last[0])  # history positions read (the last one marked + 1)
        for h in T.parallel(T.int64(H)):
            head(q, k, v, kc, vc, mask, W, nh, layer, out, h)

    return kernel


SEQUENCES_KERNEL = """
@T.prim_func
def kernel(q: T.Buffer((H, B, D), dtype), k: T.Buffer((KV, B, D), dtype),
           v: T.Buffer((KV, B, D), dtype), {caches}, mask_handle: T.handle, layer: T.int64,
           out: T.Buffer((B, H * D), dtype)):
    T.func_attr({{"tirx.noalias": True, "tirx.is_scheduled": True}})
    W = T.int64()
    mask = T.match_buffer(mask_handle, (B, W), "bool")
    last = T.alloc_buffer((B,), "int64", scope="global")
    for b in range(T.int64(B)):  # each sequence's history length (its last marked + 1)
        history_length(T.decl_buffer((W,), "bool", data=mask.data, elem_offset=b * W), W,
                       T.decl_buffer((1,), "int64", data=last.data, elem_offset=b))
    for task in T.parallel(T.int64(B * H)):
        b = T.bind(task // H)
        h = T.bind(task % H)
        q_b = T.decl_buffer((H, 1, D), dtype, data=q.data, strides=(B * D, D, 1),
                            elem_offset=b * D)
        k_b = T.decl_buffer((KV, 1, D), dtype, data=k.data, strides=(B * D, D, 1),
                            elem_offset=b * D)
        v_b = T.decl_buffer((KV, 1, D), dtype, data=v.data, strides=(B * D, D, 1),
                            elem_offset=b * D)
        mask_b = T.decl_buffer((W,), "bool", data=mask.data, elem_offset=b * W)
        out_b = T.decl_buffer((1, H * D), dtype, data=out.data, elem_offset=b * H * D)
        nh = T.bind(last[b])
{dispatch}
"""


def sequences_kernel(sequences: int, head, H: int, KV: int, D: int, L: int, C: int,
                     dtype: str) -> tirx.PrimFunc:
    """B = `sequences` sequences of one row each, one launch: a task is a (sequence, query
    head) pair running `head` on views of the sequence's row of q / k / v / out and its mask
    row, and on its own caches (operands kc0, vc0, kc1, vc1, ...: a kernel is written for each
    B, its caches selected by the sequence's index)."""
    caches = ", ".join(f"kc{b}: T.Buffer((L, KV, C, D), dtype), "
                       f"vc{b}: T.Buffer((L, KV, C, D), dtype)" for b in range(sequences))
    bodies = [f"head(q_b, k_b, v_b, kc{b}, vc{b}, mask_b, W, nh, layer, out_b, h)"
              for b in range(sequences)]
    dispatch = branches([f"b == {b}" for b in range(sequences)], bodies, indent=8)
    source = SEQUENCES_KERNEL.format(caches=caches, dispatch=dispatch)
    return parse_kernel(source, {"T": T, "head": head, "history_length": history_length,
                                 "H": H, "KV": KV, "D": D, "L": L, "C": C, "B": sequences,
                                 "dtype": dtype})
