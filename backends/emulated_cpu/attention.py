"""The attention kernel of a one-sequence step (`tyllm::attention`), written for the host CPU.

The generic lowering computes every score of a KV window, masked history included, then a
softmax and two matmuls over all of them. This kernel reads the history length from the mask (the
last history position + 1) at run time, so its cost follows the history, not the window, and
skips the causally masked blocks of the step's own rows:

0. the keys of the layer's history (from the cache, no copy of the window first) and the new keys
   are transposed once per call into [kv head, D, position], so that
1. a task (a query head x `ROWS` query rows) computes its scores with the outer-product kernel
   of the matmuls (`ROWS` x `KEY_BLOCK` accumulators in registers, no horizontal sums), block by
   block up to the last key its rows see, masked scores set to `NEG`;
2. takes each row's max and the exp of every score (a vectorisable polynomial, below), and
3. sums probabilities x values straight from the cache, `ROWS` x `VALUE_CHUNK` accumulators.

Scores and probabilities of one task stay in a per-task buffer ([ROWS, window + rows]).
"""

from tvm import tirx
from tvm.script import tirx as T
from tyllm.backends.emulated_cpu.schedules.common import divisor_tile

LANES = 16  # fp32 lanes of one 512-bit vector
ROWS = 4  # query rows per task
KEY_BLOCK = 48  # keys per score block: ROWS x KEY_BLOCK floats stay under 1 KiB (on the stack)
VALUE_CHUNK = 32  # head-dim outputs per accumulator tile in step 3
NEG = -3.0e38  # a masked score
LOG2E = 1.4426950408889634
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4  # ln 2 split: n * LN2_HI is exact
EXP_MIN = -87.0  # below it exp is 0 (fp32 underflows near -87.3)
# exp(f) - 1 - f, |f| <= ln2 / 2: the degree-7 minimax fit of the Cephes library's expf
EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
            1.6666665459e-1, 5.0000001201e-1)


def fast_exp(x):
    """exp(x) for x <= 0 as a TIR expression that vectorises: 2^n * (1 + f + f^2 P(f)), 2^n built
    from its exponent bits; relative error ~2e-7; exactly 0 below EXP_MIN (masked scores)."""
    clamped = T.max(x, T.float32(EXP_MIN))
    n = T.floor(clamped * T.float32(LOG2E) + T.float32(0.5))
    f = clamped - n * T.float32(LN2_HI) - n * T.float32(LN2_LO)
    poly = T.float32(EXP_POLY[0])
    for c in EXP_POLY[1:]:
        poly = poly * f + T.float32(c)
    mantissa = poly * f * f + f + T.float32(1.0)
    power = T.reinterpret("float32", T.shift_left(T.Cast("int32", n) + 127, 23))
    return T.Select(x < T.float32(EXP_MIN), T.float32(0.0), mantissa * power)


def vector_lanes(n: int) -> int:
    """The widest float32 vector (at most LANES lanes) whose width divides n."""
    return next(w for w in (LANES, 8, 4, 2, 1) if n % w == 0)


@T.macro
def history_length(mask, W, last):
    """last[0] = the last position the history mask [W] marks + 1 (0 when none)."""
    last[0] = T.int64(0)
    for j in range(W):
        if mask[j]:
            last[0] = j + 1


def _ceil(a, b):
    return (a + b - 1) // b


def kv_head_of(h, kv_of: tuple[int, ...]):
    """The KV head query head `h` reads, as an expression: h // group for contiguous equal
    groups, else a select over the table."""
    group = len(kv_of) // (max(kv_of) + 1)
    if list(kv_of) == [i // group for i in range(len(kv_of))]:
        return h // group
    expr = T.int64(kv_of[-1])
    for i in reversed(range(len(kv_of) - 1)):
        expr = T.Select(h == i, T.int64(kv_of[i]), expr)
    return expr


def attention_kernel(kv_of: tuple[int, ...], kv_heads: int, rows: int, head_dim: int,
                     layers: int, cache: int, dtype: str) -> tirx.PrimFunc:
    """out[m, h*D:(h+1)*D] = softmax(q_h k^T / sqrt(D)) v for one sequence's `rows` new rows:
    q [heads, M, D] (query head h reads KV head kv_of[h]), new k/v [kv_heads, M, D], the caches
    [layers, kv_heads, cache, D] read at `layer` for the history positions the mask [W] marks,
    each row attending to its own and earlier new rows."""
    H, KV, M, D, L, C = len(kv_of), kv_heads, rows, head_dim, layers, cache
    R = divisor_tile(M, ROWS)
    KB, DC = KEY_BLOCK, divisor_tile(D, VALUE_CHUNK)
    DV = vector_lanes(DC)  # lanes of an output vector
    M_PAD = _ceil(M, KB) * KB
    TASKS = H * (M // R)
    scale = float(D) ** -0.5
    f32 = "float32"

    def load(x):
        return x if dtype == f32 else T.Cast(f32, x)

    @T.prim_func
    def kernel(q: T.Buffer((H, M, D), dtype), k: T.Buffer((KV, M, D), dtype),
               v: T.Buffer((KV, M, D), dtype), kc: T.Buffer((L, KV, C, D), dtype),
               vc: T.Buffer((L, KV, C, D), dtype), mask_handle: T.handle, layer: T.int64,
               out: T.Buffer((M, H * D), dtype)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        W = T.int64()
        mask = T.match_buffer(mask_handle, (W,), "bool")
        NH = T.bind((W + KB - 1) // KB * KB)  # history columns of the key buffers
        last = T.alloc_buffer((1,), "int64", scope="global")
        history_length(mask, W, last)
        nh = T.bind(last[0])  # history positions attended (the last one marked + 1)
        hist_blocks = T.bind((nh + KB - 1) // KB)
        kt = T.alloc_buffer((KV, D, NH + M_PAD), f32)
        for g in T.parallel(T.int64(KV)):
            for j in range(hist_blocks * KB):
                for d in range(T.int64(D)):
                    kt[g, d, j] = T.Select(j < nh, load(kc[layer, g, T.min(j, C - 1), d]),
                                           T.float32(0))
            for j in range(T.int64(M_PAD)):
                for d in range(T.int64(D)):
                    kt[g, d, NH + j] = T.Select(j < M, load(k[g, T.min(j, M - 1), d]),
                                                T.float32(0))
        for task in T.parallel(T.int64(TASKS)):
            s = T.alloc_buffer((R, NH + M_PAD), f32)
            acc = T.decl_buffer((R, KB), f32, scope="global")
            out_acc = T.decl_buffer((R, DC), f32, scope="global")
            lanes = T.decl_buffer((LANES,), f32, scope="global")
            row_max = T.decl_buffer((R,), f32, scope="global")
            row_sum = T.decl_buffer((R,), f32, scope="global")
            h = T.bind(task // (M // R))
            r0 = T.bind(task % (M // R) * R)
            g = T.bind(kv_head_of(h, kv_of))
            new_blocks = T.bind((r0 + R + KB - 1) // KB)
            # 1. scores, block by block: history, then the new rows up to the tile's last
            for jb in range(hist_blocks + new_blocks):
                col = T.bind(T.Select(jb < hist_blocks, jb * KB, NH + (jb - hist_blocks) * KB))
                for r, cv in T.grid(T.int64(R), T.int64(KB // LANES)):
                    for c in T.vectorized(T.int64(LANES)):
                        acc[r, cv * LANES + c] = T.float32(0)
                for d in range(T.int64(D)):
                    for r, cv in T.grid(T.int64(R), T.int64(KB // LANES)):
                        for c in T.vectorized(T.int64(LANES)):
                            acc[r, cv * LANES + c] = acc[r, cv * LANES + c] + load(
                                q[h, r0 + r, d]) * kt[g, d, col + cv * LANES + c]
                for r, cv in T.grid(T.int64(R), T.int64(KB // LANES)):
                    for c in T.vectorized(T.int64(LANES)):
                        key = T.bind(col + cv * LANES + c)
                        s[r, key] = T.Select(
                            T.Select(jb < hist_blocks, key < nh and mask[T.min(key, W - 1)],
                                     key - NH <= r0 + r),
                            acc[r, cv * LANES + c] * T.float32(scale), T.float32(NEG))
            # 2. each row's max, then exp(score - max) in place and the row sums
            for r in range(T.int64(R)):
                for c in T.vectorized(T.int64(LANES)):
                    lanes[c] = T.float32(NEG)
                for b in range((hist_blocks + new_blocks) * (KB // LANES)):
                    col = T.bind(T.Select(b < hist_blocks * (KB // LANES), b * LANES,
                                          NH + (b - hist_blocks * (KB // LANES)) * LANES))
                    for c in T.vectorized(T.int64(LANES)):
                        lanes[c] = T.max(lanes[c], s[r, col + c])
                row_max[r] = T.float32(NEG)
                for c in range(T.int64(LANES)):
                    row_max[r] = T.max(row_max[r], lanes[c])
                for c in T.vectorized(T.int64(LANES)):
                    lanes[c] = T.float32(0)
                for b in range((hist_blocks + new_blocks) * (KB // LANES)):
                    col = T.bind(T.Select(b < hist_blocks * (KB // LANES), b * LANES,
                                          NH + (b - hist_blocks * (KB // LANES)) * LANES))
                    for c in T.vectorized(T.int64(LANES)):
                        s[r, col + c] = fast_exp(s[r, col + c] - row_max[r])
                        lanes[c] = lanes[c] + s[r, col + c]
                row_sum[r] = T.float32(0)
                for c in range(T.int64(LANES)):
                    row_sum[r] = row_sum[r] + lanes[c]
            # 3. probabilities x values, from the cache and the new rows
            for dc in range(T.int64(D // DC)):
                for r, cv in T.grid(T.int64(R), T.int64(DC // DV)):
                    for c in T.vectorized(T.int64(DV)):
                        out_acc[r, cv * DV + c] = T.float32(0)
                for j in range(nh):
                    for r, cv in T.grid(T.int64(R), T.int64(DC // DV)):
                        for c in T.vectorized(T.int64(DV)):
                            out_acc[r, cv * DV + c] = out_acc[r, cv * DV + c] + s[r, j] * load(
                                vc[layer, g, j, dc * DC + cv * DV + c])
                for j in range(r0 + R):
                    for r, cv in T.grid(T.int64(R), T.int64(DC // DV)):
                        for c in T.vectorized(T.int64(DV)):
                            out_acc[r, cv * DV + c] = out_acc[r, cv * DV + c] + s[
                                r, NH + j] * load(v[g, j, dc * DC + cv * DV + c])
                for r, cv in T.grid(T.int64(R), T.int64(DC // DV)):
                    for c in T.vectorized(T.int64(DV)):
                        out[r0 + r, h * D + dc * DC + cv * DV + c] = T.Cast(
                            dtype, out_acc[r, cv * DV + c] / row_sum[r])

    return kernel
