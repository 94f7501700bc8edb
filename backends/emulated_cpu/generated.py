"""Kernels whose operand count follows a shape (one set of weights per fused linear, one pair
of caches per sequence): TVMScript cannot loop over a function's parameters, so the signature
and the branch that picks a case's operands are written per count and parsed, the body a macro
shared with the fixed-signature kernels."""

from tvm import tirx
from tvm.script import from_source


def branches(conditions: list[str], bodies: list[str], indent: int) -> str:
    """`if c0: b0 / elif c1: b1 / ... / else: b_last` (the last case needs no condition)."""
    pad = " " * indent
    lines = []
    for i, body in enumerate(bodies):
        if len(bodies) == 1:
            return f"{pad}{body}"
        head = ("if " + conditions[i] if i == 0 else
                "elif " + conditions[i] if i < len(bodies) - 1 else "else")
        lines.append(f"{pad}{head}:\n{pad}    {body}")
    return "\n".join(lines)


def parse_kernel(source: str, names: dict) -> tirx.PrimFunc:
    """The PrimFunc `source` defines, its free names (T, macros, sizes) taken from `names`."""
    return from_source(source, extra_vars=names)
