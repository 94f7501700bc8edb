"""AutoAWQ's GEMM layout on disk: int4 packed 8 per int32, in AWQ's interleaved order.

qweight [in, out/8] int32, qzeros [in/group, out/8] int32, scales [in/group, out] fp16. This is
what vLLM's `awq` loader and AutoAWQ read.
"""

import torch

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # nibble i of a word holds column AWQ_ORDER[i] of 8
PACK = 8


def pack_columns(values: torch.Tensor) -> torch.Tensor:
    """[rows, cols] ints in [0, 16) -> [rows, cols/8] int32."""
    rows, cols = values.shape
    v = values.to(torch.int64).reshape(rows, cols // PACK, PACK)[..., AWQ_ORDER]
    shifts = torch.arange(0, 32, 4, dtype=torch.int64)
    words = (v << shifts).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_columns(words: torch.Tensor) -> torch.Tensor:
    """[rows, cols/8] int32 -> [rows, cols] int32 in [0, 16)."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    nibbles = (words[..., None] >> shifts) & 0xF  # nibble i = column AWQ_ORDER[i]
    out = torch.empty_like(nibbles)
    out[..., AWQ_ORDER] = nibbles
    return out.reshape(words.shape[0], -1)


def pack_linear(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> dict:
    """From tyllm's [out, in] integers and [out, groups] scales/zeros to AutoAWQ tensors."""
    return {"qweight": pack_columns(q.t().contiguous()),
            "qzeros": pack_columns(zeros.t().contiguous().to(torch.int32)),
            "scales": scales.t().contiguous().to(torch.float16)}


def unpack_linear(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor):
    """Back to tyllm's [out, in] integers, [out, groups] scales (as stored) and integer zeros."""
    return (unpack_columns(qweight).t().contiguous(), scales.t().contiguous(),
            unpack_columns(qzeros).t().contiguous())
