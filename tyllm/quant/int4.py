"""tyllm's int4 checkpoint layout: what the compiler reads and the die graphs dequantize.

Per quantized linear `m` (weight [out, in], groups of G inputs along `in`):
  m.qweight  uint8 [out, in/2]  byte j of a group holds input j (low nibble) and input j + G/2
                                (high nibble): unpacking is two whole-vector ops, no shuffles;
  m.scales   float [out, in/G]  (float16 on disk, the model dtype in a tree);
  m.qzeros   uint8 [out, in/G]  integer zero points in [0, 16).
  weight = (q - zero) * scale, exactly AutoAWQ's meaning. Rows and whole groups are
contiguous, so die shards are plain slices (column slices must be whole groups).
`config.json` carries `quantization_config = {"quant_method": "tyllm_int4", "bits": 4,
"group_size": G, "zero_point": true, "source": ...}`.
"""

from dataclasses import dataclass

import torch

from tyllm.errors import TyllmError

QUANT_METHOD = "tyllm_int4"
SUFFIXES = ("qweight", "scales", "qzeros")  # the tensors of one quantized linear
REQUIRED = ("quant_method", "bits", "group_size")


@dataclass(frozen=True)
class Int4Scheme:
    """Group-wise int4 with zero points; `group_size` inputs share a scale and a zero."""

    group_size: int

    def as_json(self) -> dict:
        return {"quant_method": QUANT_METHOD, "bits": 4, "group_size": self.group_size,
                "zero_point": True}


def shard_unit(scheme: Int4Scheme | None) -> int:
    """The granularity of die shards along a linear's inputs: whole groups (1 when float)."""
    return scheme.group_size if scheme else 1


def pack_group_halves(q: torch.Tensor, group_size: int) -> torch.Tensor:
    """[out, in] integers in [0, 16) -> uint8 [out, in/2] in the layout above."""
    out, inputs = q.shape
    g = q.to(torch.uint8).reshape(out, inputs // group_size, 2, group_size // 2)
    return (g[:, :, 0] | (g[:, :, 1] << 4)).reshape(out, inputs // 2)


def unpack_group_halves(qweight: torch.Tensor, group_size: int) -> torch.Tensor:
    """uint8 [out, in/2] -> uint8 [out, in]; the same two ops the die graphs run."""
    out, half = qweight.shape
    g = qweight.reshape(out, -1, group_size // 2)
    return torch.cat([g & 15, g >> 4], -1).reshape(out, half * 2)


def dequantize_int4(qweight, scales, qzeros, group_size: int, dtype) -> torch.Tensor:
    """The dense [out, in] weight, computed as the compiled graphs compute it."""
    out = qweight.shape[0]
    q = unpack_group_halves(qweight, group_size).reshape(out, -1, group_size).to(dtype)
    w = (q - qzeros.to(dtype)[..., None]) * scales.to(dtype)[..., None]
    return w.reshape(out, -1)


def dequantize_int4_fused(qweight, scales, qzeros, group_size: int) -> torch.Tensor:
    """The dense float32 [out, in] weight as the die graphs compute it: q * s - z * s (a fused
    multiply-add per weight once the group's z * s is known). Equals
    `dequantize_int4(..., torch.float32)` to float32 rounding."""
    out = qweight.shape[0]
    q = unpack_group_halves(qweight, group_size).reshape(out, -1, group_size).to(torch.float32)
    s = scales.to(torch.float32)[..., None]
    w = q * s - qzeros.to(torch.float32)[..., None] * s
    return w.reshape(out, -1)


def check_even_group(group_size: int) -> None:
    if group_size < 2 or group_size % 2:
        raise TyllmError(f"group_size={group_size}: tyllm's int4 layout packs half a group per "
                         f"byte, so the group size must be even (32, 64, 128 ...).")


def read_int4_scheme(config) -> Int4Scheme | None:
    """The scheme of a checkpoint whose config names tyllm's int4 layout; None for float ones.
    Other quantized formats are refused with the conversion command that fixes them."""
    q = getattr(config, "quantization_config", None)
    if q is None:
        return None
    q = q if isinstance(q, dict) else q.to_dict()
    method = q.get("quant_method")
    if method != QUANT_METHOD:
        raise TyllmError(
            f"The checkpoint is quantized with quant_method={method!r}, which the compiler does "
            f"not read directly: convert it first with `python scripts/checkpoint_convert.py "
            f"--src CHECKPOINT --dst CONVERTED --quant_type awq` (AutoAWQ GEMM and "
            f"compressed-tensors pack-quantized checkpoints are imported).")
    return scheme_from_config(q)


def scheme_from_config(q: dict) -> Int4Scheme:
    """The scheme a `tyllm_int4` quantization_config describes, checked."""
    if missing := [k for k in REQUIRED if k not in q]:
        raise TyllmError(f"quantization_config lacks {missing}: a {QUANT_METHOD} checkpoint "
                         f"needs {list(REQUIRED)}; re-run checkpoint_convert.py.")
    if q["bits"] != 4:
        raise TyllmError(f"quantization_config bits={q['bits']}: the {QUANT_METHOD} layout is "
                         f"4-bit; re-run checkpoint_convert.py.")
    check_even_group(int(q["group_size"]))
    return Int4Scheme(int(q["group_size"]))
