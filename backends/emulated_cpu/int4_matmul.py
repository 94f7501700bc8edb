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
- a task owns a run of adjacent panels and every row, and reads its panels one after another:
  each thread streams one contiguous range (prefetched 2 KiB ahead), where reading eight
  panels side by side made eight short streams the prefetcher kept losing (1.2-1.4x at 1 and
  2 rows out of cache); a group's partial sums are split into chains per row, so that a
  panel's FMAs do not wait on each other, all in registers;
- the inputs' group sums and x / 16 are computed once a call, before the tasks.
"""

from tvm import tirx
from tvm.script import tirx as T
from tyllm.backends.emulated_cpu.generated import branches, parse_kernel
from tyllm.backends.emulated_cpu.int4_integer_dot import PANEL_ARGS as INTEGER_DOT_ARGS
from tyllm.backends.emulated_cpu.int4_integer_dot import integer_dot_macros
from tyllm.backends.emulated_cpu.int4_integer_dot import serves as serves_integer_dot
from tyllm.backends.emulated_cpu.int4_task import output_macros
from tyllm.backends.emulated_cpu.schedules.common import divisor_tile

ACCUMULATORS = 16  # sets the panels per task: a task of few rows owns more of them
CHAINS = 8  # independent partial sums a panel's group keeps (rows x chains), to hide FMA latency
LINE_ROWS = 4  # byte rows of a panel in one 64-byte line
PREFETCH_ROWS = 128  # how far ahead (in byte rows, 2 KiB) a panel's stream is prefetched
MAX_ROWS = 8  # rows this kernel serves; more (prefill) go to the scheduled matmul
MAX_SEGMENTS = 3  # linears of one input in one launch (q/k/v)
INT4_KERNEL_PREFIX = "int4_linear_m"  # a one-linear kernel's name: this, then its rows, ...


def float_macros(R: int, K: int, G: int, P: int, dtype: str):
    """(prepare, panel_task, scratch) of the float kernel: x and x / 16 in float32 and the
    groups' input sums once a call, then one task's panels."""
    H, KG, f32 = G // 2, K // G, "float32"
    clear, write = output_macros(R, P, dtype)

    @T.macro
    def prepare(x, x_low, x_high, x_sum):
        for r, i in T.grid(T.int64(R), T.int64(K)):
            x_low[r, i] = T.Cast(f32, x[r, i])
            x_high[r, i] = x_low[r, i] * T.float32(0.0625)
        for r, g in T.grid(T.int64(R), T.int64(KG)):
            x_sum[r, g] = T.float32(0)
            for e in range(T.int64(G)):
                x_sum[r, g] = x_sum[r, g] + x_low[r, g * G + e]

    C = next(c for c in (4, 2, 1) if H % c == 0 and R * c <= CHAINS)

    @T.macro
    def panel_task(x_low, x_high, x_sum, qweight, scales, qzeros, b, out, task, V, bias,
                   NP):
        acc = T.decl_buffer((R, P), f32, scope="global")
        part = T.decl_buffer((R, C, P), f32, scope="global")
        for v in range(T.int64(V)):
            n0 = T.bind(task * V + v)
            clear(acc)
            for g in range(T.int64(KG)):
                for r in T.unroll(T.int64(R)):
                    for j in T.unroll(T.int64(C)):
                        for c in T.vectorized(T.int64(P)):
                            part[r, j, c] = T.float32(0)
                for e0 in range(T.int64(H // C)):
                    if e0 % T.int64(LINE_ROWS // C) == 0:
                        T.evaluate(T.call_llvm_intrin(
                            "void", "llvm.prefetch.p0",
                            T.address_of(qweight[n0, g * H + e0 * C + PREFETCH_ROWS, 0]),
                            T.int32(0), T.int32(3), T.int32(1)))
                    for j in T.unroll(T.int64(C)):
                        for r in T.unroll(T.int64(R)):
                            for c in T.vectorized(T.int64(P)):
                                e = T.bind(e0 * C + j)
                                byte = T.bind(T.Cast("int32", qweight[n0, g * H + e, c]))
                                part[r, j, c] = (
                                    part[r, j, c]
                                    + x_low[r, g * G + e] * T.Cast(f32, T.bitwise_and(byte, 15))
                                    + x_high[r, g * G + H + e]
                                    * T.Cast(f32, T.bitwise_and(byte, 240)))
                for r in T.unroll(T.int64(R)):
                    for j in T.unroll(T.int64(1), T.int64(C)):
                        for c in T.vectorized(T.int64(P)):
                            part[r, 0, c] = part[r, 0, c] + part[r, j, c]
                for r in T.unroll(T.int64(R)):
                    for c in T.vectorized(T.int64(P)):
                        acc[r, c] = acc[r, c] + T.Cast(f32, scales[n0, g, c]) * (
                            part[r, 0, c] - T.Cast(f32, qzeros[n0, g, c]) * x_sum[r, g])
            write(acc, b, out, n0, bias)

    return prepare, panel_task, FLOAT_SCRATCH


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
    KG = K // G
    f32 = "float32"
    NPs = [n // P for n, _ in segments]
    Vs = [divisor_tile(np_, max(1, ACCUMULATORS // (2 * R))) for np_ in NPs]
    starts = [sum(np_ // v for np_, v in zip(NPs[:i], Vs[:i], strict=True))
              for i in range(len(segments) + 1)]
    if serves_integer_dot(R, G, P):
        prepare, panel_task, scratch = integer_dot_macros(R, K, G, dtype, PREFETCH_ROWS)
        panel_args = INTEGER_DOT_ARGS
    else:
        prepare, panel_task, scratch = float_macros(R, K, G, P, dtype)
        panel_args = FLOAT_ARGS


    operands, outputs, bodies = [], [], []
    for i, (n, bias) in enumerate(segments):
        operands.append(f"qweight{i}: T.Buffer(({NPs[i]}, {K // 2}, {P}), 'uint8'), "
                        f"scales{i}: T.Buffer(({NPs[i]}, {KG}, {P}), scale_dtype), "
                        f"qzeros{i}: T.Buffer(({NPs[i]}, {KG}, {P}), 'uint8'), "
                        f"bias{i}: T.Buffer(({n},), {'dtype' if bias else 'f32'})")
        outputs.append(f"out{i}: T.Buffer(({R}, {n}), dtype)")
        bodies.append(f"panel_task({panel_args}, qweight{i}, scales{i}, qzeros{i}, bias{i}, "
                      f"out{i}, task - {starts[i]}, {Vs[i]}, {bias}, {NPs[i]})")
    dispatch = branches([f"task < {start}" for start in starts[1:]], bodies, indent=8)
    source = LINEARS_KERNEL.format(operands=", ".join(operands + outputs), tasks=starts[-1],
                                   scratch=scratch, dispatch=dispatch)
    return parse_kernel(source, {"T": T, "R": R, "K": K, "KG": KG, "f32": f32, "dtype": dtype,
                                 "scale_dtype": scale_dtype, "prepare": prepare,
                                 "panel_task": panel_task})


LINEARS_KERNEL = """
@T.prim_func
def kernel(x: T.Buffer((R, K), dtype), {operands}):
    T.func_attr({{"tirx.noalias": True, "tirx.is_scheduled": True}}){scratch}
    for task in T.parallel(T.int64({tasks})):
{dispatch}
"""
FLOAT_SCRATCH = """
    x_low = T.alloc_buffer((R, K), f32)
    x_high = T.alloc_buffer((R, K), f32)  # x / 16: the high nibble is converted as 16 q
    x_sum = T.alloc_buffer((R, KG), f32)
    prepare(x, x_low, x_high, x_sum)"""
FLOAT_ARGS = "x_low, x_high, x_sum"
