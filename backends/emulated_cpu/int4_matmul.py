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
MAX_SEGMENTS = 3  # linears of one input in one launch (q/k/v)


def int4_linear_kernel(rows: int, out_features: int, in_features: int, group_size: int,
                       lanes: int, dtype: str, scale_dtype: str,
                       bias: bool) -> tirx.PrimFunc:
    """out [rows, N] = x [rows, K] @ W^T (+ bias) for W in int4 panels: bytes [N/P, K/2, P],
    scales (`scale_dtype`) and zero points [N/P, K/G, P], P = `lanes`; x, bias and out in
    `dtype` (without `bias`, its operand is float32 and never read), the sums in float32 and
    one rounding at the end."""
    return int4_linears_kernel(rows, ((out_features, bias),), in_features, group_size, lanes,
                               dtype, scale_dtype)


def int4_linears_kernel(rows: int, segments: tuple[tuple[int, bool], ...], in_features: int,
                        group_size: int, lanes: int, dtype: str,
                        scale_dtype: str) -> tirx.PrimFunc:
    """`int4_linear_kernel` for up to MAX_SEGMENTS linears of one input (q/k/v, gate/up), each
    segment (N, bias) its own weights and output, in one launch: the input is prepared once
    and one parallel loop runs every segment's tasks. Operands: x, then (qweight, scales,
    qzeros, bias) per segment, then the outputs."""
    R, K, G, P = rows, in_features, group_size, lanes
    H, KG = G // 2, K // G
    f32 = "float32"
    NPs = [n // P for n, _ in segments]
    Vs = [divisor_tile(np_, max(1, ACCUMULATORS // (2 * R))) for np_ in NPs]
    starts = [sum(np_ // v for np_, v in zip(NPs[:i], Vs[:i], strict=True))
              for i in range(len(segments) + 1)]

    @T.macro
    def prepare(x, x_low, x_high, x_sum):
        for r, i in T.grid(T.int64(R), T.int64(K)):
            x_low[r, i] = T.Cast(f32, x[r, i])
            x_high[r, i] = x_low[r, i] * T.float32(0.0625)
        for r, g in T.grid(T.int64(R), T.int64(KG)):
            x_sum[r, g] = T.float32(0)
            for e in range(T.int64(G)):
                x_sum[r, g] = x_sum[r, g] + x_low[r, g * G + e]

    @T.macro
    def panel_task(x_low, x_high, x_sum, qweight, scales, qzeros, b, out, task, V, bias):
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
                    if bias:
                        out[r, n] = T.Cast(dtype, acc[r, v, c] + T.Cast(f32, b[n]))
                    else:
                        out[r, n] = T.Cast(dtype, acc[r, v, c])

    def shapes(i):
        n, bias = segments[i]
        return ((NPs[i], K // 2, P), (NPs[i], KG, P), (n,), dtype if bias else f32, (R, n))

    q0, s0, b0, bt0, o0 = shapes(0)
    if len(segments) == 1:
        @T.prim_func
        def one(x: T.Buffer((R, K), dtype), qweight: T.Buffer(q0, "uint8"),
                scales: T.Buffer(s0, scale_dtype), qzeros: T.Buffer(s0, "uint8"),
                b: T.Buffer(b0, bt0), out: T.Buffer(o0, dtype)):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            x_low = T.alloc_buffer((R, K), f32)
            x_high = T.alloc_buffer((R, K), f32)  # x / 16: the high nibble is converted as 16 q
            x_sum = T.alloc_buffer((R, KG), f32)
            prepare(x, x_low, x_high, x_sum)
            for task in T.parallel(T.int64(starts[1])):
                panel_task(x_low, x_high, x_sum, qweight, scales, qzeros, b, out, task, Vs[0],
                           segments[0][1])

        return one
    q1, s1, b1, bt1, o1 = shapes(1)
    if len(segments) == 2:
        @T.prim_func
        def two(x: T.Buffer((R, K), dtype), qweight0: T.Buffer(q0, "uint8"),
                scales0: T.Buffer(s0, scale_dtype), qzeros0: T.Buffer(s0, "uint8"),
                bias0: T.Buffer(b0, bt0), qweight1: T.Buffer(q1, "uint8"),
                scales1: T.Buffer(s1, scale_dtype), qzeros1: T.Buffer(s1, "uint8"),
                bias1: T.Buffer(b1, bt1), out0: T.Buffer(o0, dtype),
                out1: T.Buffer(o1, dtype)):
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
            x_low = T.alloc_buffer((R, K), f32)
            x_high = T.alloc_buffer((R, K), f32)
            x_sum = T.alloc_buffer((R, KG), f32)
            prepare(x, x_low, x_high, x_sum)
            for task in T.parallel(T.int64(starts[2])):
                if task < starts[1]:
                    panel_task(x_low, x_high, x_sum, qweight0, scales0, qzeros0, bias0, out0,
                               task, Vs[0], segments[0][1])
                else:
                    panel_task(x_low, x_high, x_sum, qweight1, scales1, qzeros1, bias1, out1,
                               task - starts[1], Vs[1], segments[1][1])

        return two
    q2, s2, b2, bt2, o2 = shapes(2)

    @T.prim_func
    def three(x: T.Buffer((R, K), dtype), qweight0: T.Buffer(q0, "uint8"),
              scales0: T.Buffer(s0, scale_dtype), qzeros0: T.Buffer(s0, "uint8"),
              bias0: T.Buffer(b0, bt0), qweight1: T.Buffer(q1, "uint8"),
              scales1: T.Buffer(s1, scale_dtype), qzeros1: T.Buffer(s1, "uint8"),
              bias1: T.Buffer(b1, bt1), qweight2: T.Buffer(q2, "uint8"),
              scales2: T.Buffer(s2, scale_dtype), qzeros2: T.Buffer(s2, "uint8"),
              bias2: T.Buffer(b2, bt2), out0: T.Buffer(o0, dtype), out1: T.Buffer(o1, dtype),
              out2: T.Buffer(o2, dtype)):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        x_low = T.alloc_buffer((R, K), f32)
        x_high = T.alloc_buffer((R, K), f32)
        x_sum = T.alloc_buffer((R, KG), f32)
        prepare(x, x_low, x_high, x_sum)
        for task in T.parallel(T.int64(starts[3])):
            if task < starts[1]:
                panel_task(x_low, x_high, x_sum, qweight0, scales0, qzeros0, bias0, out0, task,
                           Vs[0], segments[0][1])
            elif task < starts[2]:
                panel_task(x_low, x_high, x_sum, qweight1, scales1, qzeros1, bias1, out1,
                           task - starts[1], Vs[1], segments[1][1])
            else:
                panel_task(x_low, x_high, x_sum, qweight2, scales2, qzeros2, bias2, out2,
                           task - starts[2], Vs[2], segments[2][1])

    return three
