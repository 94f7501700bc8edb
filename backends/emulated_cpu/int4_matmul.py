"""The int4 linear of a few rows (`tyllm::int4_linear`: decode and batched decode), written for
the host CPU.

The scheduled matmul (schedules/panel.py) dequantizes every weight before multiplying it:
unpack, convert, `q * s - z * s`, then the product, two FMAs a weight and a group's scales in
registers next to the accumulators. This kernel applies a group's scale and zero point once per
group instead (`out = sum_g s_g * (sum_k x_k q_k - z_g * sum_k x_k)`), so a weight costs a mask,
a conversion and one FMA:

- the bytes of a group's panel hold input e in their low nibble and input e + G/2 in their high
  one (tyllm.quant.int4); a byte is widened once and masked twice, and the high nibble is
  converted as it lies (16 q) and multiplied by x / 16, exact in float32;
- a task owns `vectors` panels and every row: a partial sum per (row, panel vector) for the
  group, the running output next to it, all in registers;
- the inputs' group sums and x / 16 are computed once a call, before the tasks.
"""

from tvm import tirx
from tvm.script import tirx as T
from tyllm.backends.emulated_cpu.schedules.common import divisor_tile

ACCUMULATORS = 16  # partial sums + outputs of a task (in 512-bit registers, 32 of them)
MAX_ROWS = 8  # rows this kernel serves; more (prefill) go to the scheduled matmul


def int4_linear_kernel(rows: int, out_features: int, in_features: int, group_size: int,
                       lanes: int, dtype: str, scale_dtype: str,
                       bias: bool) -> tirx.PrimFunc:
    """out [rows, N] = x [rows, K] @ W^T (+ bias) for W in int4 panels: bytes [N/P, K/2, P],
    scales (`scale_dtype`) and zero points [N/P, K/G, P], P = `lanes`; x, bias and out in
    `dtype` (without `bias`, its operand is float32 and never read), the sums in float32 and
    one rounding at the end."""
    R, N, K, G, P = rows, out_features, in_features, group_size, lanes
    H, NP, KG = G // 2, N // P, K // G
    V = divisor_tile(NP, max(1, ACCUMULATORS // (2 * R)))  # panel vectors a task multiplies
    f32 = "float32"

    def bias_of(b, n):
        return T.Cast(f32, b[n]) if bias else T.float32(0)

    @T.prim_func
    def kernel(x: T.Buffer((R, K), dtype), qweight: T.Buffer((NP, K // 2, P), "uint8"),
               scales: T.Buffer((NP, KG, P), scale_dtype), qzeros: T.Buffer((NP, KG, P), "uint8"),
               b: T.Buffer((N,), dtype if bias else f32), out: T.Buffer((R, N), dtype)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        x_low = T.alloc_buffer((R, K), f32)
        x_high = T.alloc_buffer((R, K), f32)  # x / 16: the high nibble is converted as 16 q
        x_sum = T.alloc_buffer((R, KG), f32)
        for r, i in T.grid(T.int64(R), T.int64(K)):
            x_low[r, i] = T.Cast(f32, x[r, i])
            x_high[r, i] = x_low[r, i] * T.float32(0.0625)
        for r, g in T.grid(T.int64(R), T.int64(KG)):
            x_sum[r, g] = T.float32(0)
            for e in range(T.int64(G)):
                x_sum[r, g] = x_sum[r, g] + x_low[r, g * G + e]
        for task in T.parallel(T.int64(NP // V)):
            acc = T.decl_buffer((R, V, P), f32, scope="global")
            part = T.decl_buffer((R, V, P), f32, scope="global")
            for r in T.unroll(T.int64(R)):
                for v in T.unroll(T.int64(V)):
                    for c in T.vectorized(T.int64(P)):
                        acc[r, v, c] = T.float32(0)
            for g in range(T.int64(KG)):
                for r in T.unroll(T.int64(R)):
                    for v in T.unroll(T.int64(V)):
                        for c in T.vectorized(T.int64(P)):
                            part[r, v, c] = T.float32(0)
                for e in range(T.int64(H)):
                    for v in T.unroll(T.int64(V)):
                        for r in T.unroll(T.int64(R)):
                            for c in T.vectorized(T.int64(P)):
                                byte = T.bind(T.Cast("int32", qweight[task * V + v, g * H + e, c]))
                                part[r, v, c] = (
                                    part[r, v, c]
                                    + x_low[r, g * G + e] * T.Cast(f32, T.bitwise_and(byte, 15))
                                    + x_high[r, g * G + H + e]
                                    * T.Cast(f32, T.bitwise_and(byte, 240)))
                for r in T.unroll(T.int64(R)):
                    for v in T.unroll(T.int64(V)):
                        for c in T.vectorized(T.int64(P)):
                            acc[r, v, c] = acc[r, v, c] + T.Cast(
                                f32, scales[task * V + v, g, c]) * (
                                part[r, v, c]
                                - T.Cast(f32, qzeros[task * V + v, g, c]) * x_sum[r, g])
            for r in T.unroll(T.int64(R)):
                for v in T.unroll(T.int64(V)):
                    for c in T.vectorized(T.int64(P)):
                        n = T.bind((task * V + v) * P + c)
                        out[r, n] = T.Cast(dtype, acc[r, v, c] + bias_of(b, n))

    return kernel
