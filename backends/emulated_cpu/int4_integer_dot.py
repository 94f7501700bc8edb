"""The int4 linear of decode rows as integer dot products (AVX-512 VNNI), where the host has
them: the float kernel (int4_matmul.py) spends a mask, a conversion and an FMA on every 16
weights, and that many instructions leave a core short of its share of the memory bandwidth.
Here 64 bytes of weights (128 of them) cost one load, one byte permutation, two masks and two
`vpdpbusd` per input digit.

- Each input group is fixed point: x = step * X, with step its largest magnitude / LIMIT, and
  X written as signed bytes (balanced base 256), as many as the activations' precision needs
  (`digits_for`): two for 16-bit activations (half a step is 2^-16 of the group's largest input,
  finer than float16's own rounding of any input within 1/16 of it), three for float32 (2^-24).
  A digit fewer is a third fewer `vpdpbusd`.
- A panel's byte row e holds input e (low nibble) and e + G/2 (high nibble) of 16 columns
  (tyllm.quant.int4). Four rows are one 64-byte load, `vpermb` turns them into the four bytes
  of each column `vpdpbusd` multiplies with four inputs' digits. The high nibble is used as it
  lies (16 q) into accumulators of its own, divided by 16 (exactly) when they are combined.
- Per group and column the digit sums are exact in int32, combined in float32 and scaled as
  in the float kernel: `out += s_g * (step * sum X q - z_g * sum x)`, sum x from the same X.
- Rows go in passes of up to PASS_ROWS over a group's bytes (in L1 after the first), so that a
  pass's digit sums fit in registers.
"""

from functools import cache

import tvm
from tvm import tirx
from tvm.script import tirx as T
from tyllm.backends.emulated_cpu.int4_task import output_macros

FEATURES = ("avx512vnni", "avx512vbmi")  # vpdpbusd, vpermb
MAX_ROWS = 8  # every decode row count (int4_matmul.MAX_ROWS)
PASS_ROWS = 4  # rows a pass over a group's bytes serves: 4 x 2 x digits accumulators
HALF_PRECISION_DIGITS = 2
FLOAT32_DIGITS = 3
LANES = 16  # int32 columns of a 512-bit register: the panel width this kernel reads


@cache
def host_has_integer_dot() -> bool:
    """Whether the host CPU (the target every graph is compiled for) has FEATURES."""
    cpu = tvm.target.codegen.llvm_get_system_cpu()
    target = tvm.target.Target({"kind": "llvm", "mcpu": cpu})
    return bool(tvm.target.codegen.target_has_features(list(FEATURES), target))


def serves(rows: int, group_size: int, lanes: int) -> bool:
    return (rows <= MAX_ROWS and lanes == LANES and group_size % (2 * LANES) == 0
            and host_has_integer_dot())


def digits_for(dtype: str) -> int:
    """Balanced base-256 digits of an input: enough for the precision of `dtype` activations."""
    return FLOAT32_DIGITS if dtype == "float32" else HALF_PRECISION_DIGITS


def integer_dot_macros(R: int, K: int, G: int, dtype: str, prefetch_rows: int):
    """(prepare, panel_task, scratch): the input's digits, steps and group sums once a call,
    then one task's panels; `scratch` declares their buffers in the kernel."""
    H, KG, f32 = G // 2, K // G, "float32"
    DIGITS = digits_for(dtype)
    ONES = sum(256 ** d for d in range(DIGITS))  # the number whose digits are all 1
    LIMIT = 127 * ONES - 1  # the largest input's X, one below what the digits write (rounding)
    OFFSET = 128 * ONES  # X + OFFSET: each digit + 128, unsigned
    clear, write = output_macros(R, LANES, dtype)

    @T.macro
    def prepare(x, x32, digits8, x_step, x_sum, perm8):
        lanes = T.decl_buffer((LANES,), f32, scope="global")
        sums = T.decl_buffer((LANES,), "int32", scope="global")
        big = T.decl_buffer((2,), f32, scope="global")
        total = T.decl_buffer((1,), "int32", scope="global")
        biased = T.decl_buffer((LANES,), "int32", scope="global")
        for c in range(T.int64(4 * LANES)):  # byte c of the result is byte 16 (c % 4) + c // 4
            perm8[c] = T.Cast("int8", (c % 4) * LANES + c // 4)
        for r, i in T.grid(T.int64(R), T.int64(K)):
            x32[r, i] = T.Cast(f32, x[r, i])
        for r, g in T.grid(T.int64(R), T.int64(KG)):
            for lane in T.vectorized(LANES):
                lanes[lane] = T.float32(0)
                sums[lane] = 0
            for chunk in range(T.int64(G // LANES)):
                for lane in T.vectorized(LANES):
                    lanes[lane] = T.max(lanes[lane],
                                        T.fabs(x32[r, g * G + chunk * LANES + lane]))
            big[0] = T.float32(0)
            for lane in range(LANES):
                big[0] = T.max(big[0], lanes[lane])
            big[1] = T.if_then_else(big[0] > T.float32(0), T.float32(LIMIT) / big[0],
                                    T.float32(0))
            x_step[r, g] = big[0] / T.float32(LIMIT)
            for side in T.unroll(2):  # 0: the low nibbles' inputs, 1: the high ones'
                for chunk in range(T.int64(H // LANES)):
                    for lane in T.vectorized(LANES):
                        e = T.bind(chunk * LANES + lane)
                        q = T.bind(T.Cast("int32", T.round(x32[r, g * G + side * H + e]
                                                           * big[1])))
                        sums[lane] = sums[lane] + q
                        biased[lane] = q + OFFSET
                    for d in T.unroll(DIGITS):
                        for lane in T.vectorized(LANES):
                            digits8[r, side, d, g * H + chunk * LANES + lane] = T.Cast(
                                "int8", T.bitwise_and(T.shift_right(biased[lane], 8 * d), 255)
                                - 128)
            total[0] = 0
            for lane in range(LANES):
                total[0] = total[0] + sums[lane]
            x_sum[r, g] = T.Cast(f32, total[0]) * x_step[r, g]

    def dot(acc, weights, digits):
        return T.call_llvm_pure_intrin("int32x16", "llvm.x86.avx512.vpdpbusd.512", acc, weights,
                                       T.reinterpret("int8x64", T.Broadcast(digits, LANES)))

    ramp = tirx.Ramp(0, 1, LANES)  # one register of int32 (an expression, not a variable)

    RP = max(d for d in range(1, min(R, PASS_ROWS) + 1) if R % d == 0)

    def digit_sum(low, high, r, d, c):  # the high nibble's products are of 16 q
        return T.Cast(f32, low[r, d, c]) + T.Cast(f32, high[r, d, c]) * T.float32(0.0625)

    def digits_value(low, high, r, c):  # sum X q from the digits' sums
        total = digit_sum(low, high, r, 0, c)
        for d in range(1, DIGITS):
            total = total + digit_sum(low, high, r, d, c) * T.float32(256 ** d)
        return total

    @T.macro
    def panel_task(digits32, x_step, x_sum, perm, qweight, scales, qzeros, b, out, task, V,
                   bias, NP):
        rows4 = T.decl_buffer((NP, K // 8, LANES), "int32", data=qweight.data)
        # a pass's digit sums, in registers (buffers under 1 KiB stay on the stack)
        low_sums = T.decl_buffer((RP, DIGITS, LANES), "int32", scope="global")
        high_sums = T.decl_buffer((RP, DIGITS, LANES), "int32", scope="global")
        acc = T.decl_buffer((R, LANES), f32, scope="global")
        for v in range(T.int64(V)):
            n0 = T.bind(task * V + v)
            clear(acc)
            for g in range(T.int64(KG)):
                for rp in range(T.int64(R // RP)):  # the group's bytes are in L1 after the first
                    for r in T.unroll(T.int64(RP)):
                        for d in T.unroll(DIGITS):
                            low_sums[r, d, ramp] = T.Broadcast(T.int32(0), LANES)
                            high_sums[r, d, ramp] = T.Broadcast(T.int32(0), LANES)
                    for i in range(T.int64(H // 4)):
                        T.evaluate(T.call_llvm_intrin(
                            "void", "llvm.prefetch.p0",
                            T.address_of(qweight[n0, g * H + i * 4 + prefetch_rows, 0]),
                            T.int32(0), T.int32(3), T.int32(1)))
                        w = T.bind(T.call_llvm_pure_intrin(
                            "int8x64", "llvm.x86.avx512.permvar.qi.512",
                            T.reinterpret("int8x64", rows4[n0, g * (H // 4) + i, ramp]),
                            T.reinterpret("int8x64", perm[ramp])))
                        low = T.bind(T.bitwise_and(w, T.Broadcast(T.int8(15), 64)))
                        high = T.bind(T.bitwise_and(w, T.Broadcast(T.int8(-16), 64)))
                        for r in T.unroll(T.int64(RP)):
                            for d in T.unroll(DIGITS):
                                low_sums[r, d, ramp] = dot(
                                    low_sums[r, d, ramp], low,
                                    digits32[rp * RP + r, 0, d, g * (H // 4) + i])
                                high_sums[r, d, ramp] = dot(
                                    high_sums[r, d, ramp], high,
                                    digits32[rp * RP + r, 1, d, g * (H // 4) + i])
                    for r in T.unroll(T.int64(RP)):
                        for c in T.vectorized(T.int64(LANES)):
                            row = T.bind(rp * RP + r)
                            total = T.bind(digits_value(low_sums, high_sums, r, c))
                            acc[row, c] = acc[row, c] + T.Cast(f32, scales[n0, g, c]) * (
                                total * x_step[row, g]
                                - T.Cast(f32, qzeros[n0, g, c]) * x_sum[row, g])
            write(acc, b, out, n0, bias)

    return prepare, panel_task, SCRATCH.format(digits=DIGITS, lanes=LANES)


SCRATCH = """
    x32 = T.alloc_buffer((R, K), f32)
    digits8 = T.alloc_buffer((R, 2, {digits}, K // 2), "int8")
    digits32 = T.decl_buffer((R, 2, {digits}, K // 8), "int32", data=digits8.data)
    perm8 = T.alloc_buffer((4 * {lanes},), "int8")
    perm = T.decl_buffer(({lanes},), "int32", data=perm8.data)
    x_step = T.alloc_buffer((R, KG), f32)
    x_sum = T.alloc_buffer((R, KG), f32)
    prepare(x, x32, digits8, x_step, x_sum, perm8)"""
PANEL_ARGS = "digits32, x_step, x_sum, perm"
