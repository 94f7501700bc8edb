"""What every int4 decode kernel's task does around its groups (int4_matmul.py's float kernel,
int4_integer_dot.py's): a panel's running outputs cleared, then written with the bias and the
one rounding to the activations' dtype."""

from tvm.script import tirx as T


def output_macros(R: int, P: int, dtype: str):
    """(clear, write): `clear(acc)` zeroes the [R, P] float32 outputs of a panel, `write(acc, b,
    out, n0, bias)` stores them as panel n0's columns of `out` (+ `b` with `bias`)."""
    f32 = "float32"

    @T.macro
    def clear(acc):
        for r in T.unroll(T.int64(R)):
            for c in T.vectorized(T.int64(P)):
                acc[r, c] = T.float32(0)

    @T.macro
    def write(acc, b, out, n0, bias):
        for r in T.unroll(T.int64(R)):
            for c in T.vectorized(T.int64(P)):
                n = T.bind(n0 * P + c)
                if bias:
                    out[r, n] = T.Cast(dtype, acc[r, c] + T.Cast(f32, b[n]))
                else:
                    out[r, n] = T.Cast(dtype, acc[r, c])

    return clear, write
