"""The attention of one new row (`tyllm::attention` at decode), written for the host CPU.

The kernel of several rows (attention.py) transposes the history's keys once a call so that its
score tiles are outer products; with one row that transposition costs more than the attention
(a scalar copy of every cached key, 10x the time of reading the cache at 1000 positions). Here
a task is one query head and reads the cache as it lies:

1. a score is a dot product along the head dim: `DV`-lane partial sums, then a halving tree;
2. the row's max, then exp(score - max) in place and its sum, a vector at a time;
3. probabilities x values, each cached value row scaled and added, vectorised along the head
   dim.

Masked history positions (holes in the mask) score `NEG` and weigh 0; the history length is read
from the mask at run time, so the cost follows the history, not the window.
"""

from tvm import tirx
from tvm.script import tirx as T
from tyllm.backends.emulated_cpu.attention import LANES, NEG, fast_exp, kv_head_of


def decode_attention_kernel(kv_of: tuple[int, ...], kv_heads: int, head_dim: int,
                            layers: int, cache: int, dtype: str) -> tirx.PrimFunc:
    """out[0, h*D:(h+1)*D] = softmax(q_h k^T / sqrt(D)) v for one new row: q [heads, 1, D]
    (query head h reads KV head kv_of[h]), new k/v [kv_heads, 1, D], the caches [layers,
    kv_heads, cache, D] read at `layer` for the history positions the mask [W] marks."""
    H, KV, D, L, C = len(kv_of), kv_heads, head_dim, layers, cache
    DV = next(w for w in (LANES, 8, 4, 2, 1) if D % w == 0)  # lanes of a partial-sum vector
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

    @T.prim_func
    def kernel(q: T.Buffer((H, 1, D), dtype), k: T.Buffer((KV, 1, D), dtype),
               v: T.Buffer((KV, 1, D), dtype), kc: T.Buffer((L, KV, C, D), dtype),
               vc: T.Buffer((L, KV, C, D), dtype), mask_handle: T.handle, layer: T.int64,
               out: T.Buffer((1, H * D), dtype)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        W = T.int64()
        mask = T.match_buffer(mask_handle, (W,), "bool")
        last = T.alloc_buffer((1,), "int64", scope="global")
        last[0] = T.int64(0)
        for j in range(W):
            if mask[j]:
                last[0] = j + 1
        nh = T.bind(last[0])  # history positions read (the last one marked + 1)
        blocks = T.bind((nh + LANES) // LANES)  # score vectors: nh history keys + the new one
        for h in T.parallel(T.int64(H)):
            s = T.alloc_buffer(((W + LANES) // LANES * LANES,), f32)
            qs = T.decl_buffer((D,), f32, scope="global")
            part = T.decl_buffer((DV,), f32, scope="global")
            acc = T.decl_buffer((D,), f32, scope="global")
            lanes = T.decl_buffer((LANES,), f32, scope="global")
            total = T.decl_buffer((2,), f32, scope="global")  # the row's max and sum
            g = T.bind(kv_head_of(h, kv_of))
            for d in T.vectorized(T.int64(D)):
                qs[d] = load(q[h, 0, d]) * T.float32(scale)
            # 1. scores: the history's keys, then the new one
            for j in range(nh):
                for c in T.vectorized(T.int64(DV)):
                    part[c] = qs[c] * load(kc[layer, g, j, c])
                for dv in T.unroll(T.int64(1), T.int64(ND)):
                    for c in T.vectorized(T.int64(DV)):
                        part[c] = part[c] + qs[dv * DV + c] * load(kc[layer, g, j, dv * DV + c])
                lane_sum(part)
                s[j] = T.Select(mask[j], part[0], T.float32(NEG))
            for c in T.vectorized(T.int64(DV)):
                part[c] = qs[c] * load(k[g, 0, c])
            for dv in T.unroll(T.int64(1), T.int64(ND)):
                for c in T.vectorized(T.int64(DV)):
                    part[c] = part[c] + qs[dv * DV + c] * load(k[g, 0, dv * DV + c])
            lane_sum(part)
            s[nh] = part[0]
            for j in range(nh + 1, blocks * LANES):
                s[j] = T.float32(NEG)
            # 2. max, exp and sum, a vector of scores at a time
            for c in T.vectorized(T.int64(LANES)):
                lanes[c] = T.float32(NEG)
            for b in range(blocks):
                for c in T.vectorized(T.int64(LANES)):
                    lanes[c] = T.max(lanes[c], s[b * LANES + c])
            total[0] = T.float32(NEG)
            for c in range(T.int64(LANES)):
                total[0] = T.max(total[0], lanes[c])
            for c in T.vectorized(T.int64(LANES)):
                lanes[c] = T.float32(0)
            for b in range(blocks):
                for c in T.vectorized(T.int64(LANES)):
                    s[b * LANES + c] = fast_exp(s[b * LANES + c] - total[0])
                    lanes[c] = lanes[c] + s[b * LANES + c]
            total[1] = T.float32(0)
            for c in range(T.int64(LANES)):
                total[1] = total[1] + lanes[c]
            # 3. probabilities x values: the new row's, then the history's
            for d in T.vectorized(T.int64(D)):
                acc[d] = s[nh] * load(v[g, 0, d])
            for j in range(nh):
                for d in T.vectorized(T.int64(D)):
                    acc[d] = acc[d] + s[j] * load(vc[layer, g, j, d])
            for d in T.vectorized(T.int64(D)):
                out[0, h * D + d] = T.Cast(dtype, acc[d] / total[1])

    return kernel
