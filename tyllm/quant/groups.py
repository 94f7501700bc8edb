"""Group-wise asymmetric integer quantization of a weight [out, in] along `in` (AWQ's layout)."""

import torch

from tyllm.errors import TyllmError


def check_group_size(in_features: int, group_size: int, name: str = "weight") -> None:
    if group_size <= 0 or in_features % group_size:
        divisors = [g for g in (32, 64, 128) if in_features % g == 0]
        raise TyllmError(f"group_size={group_size} does not divide the input dimension "
                         f"{in_features} of {name}: use a group size that divides it "
                         f"(e.g. {divisors or 'a divisor of ' + str(in_features)}).")


def grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    check_group_size(w.shape[-1], group_size)
    return w.reshape(w.shape[0], w.shape[1] // group_size, group_size)


def group_params(w: torch.Tensor, group_size: int, bits: int):
    """scales and integer zero points per (row, group): [out, in / group_size] each."""
    g = grouped(w.float(), group_size)
    wmax, wmin = g.amax(-1), g.amin(-1)
    qmax = 2**bits - 1
    scales = (wmax - wmin).clamp(min=1e-5) / qmax
    zeros = (-torch.round(wmin / scales)).clamp(0, qmax)
    return scales, zeros


def quantize(w: torch.Tensor, group_size: int, bits: int):
    """(integers [out, in] in [0, 2^bits), scales, zeros) for `w`."""
    scales, zeros = group_params(w, group_size, bits)
    g = grouped(w.float(), group_size)
    q = (torch.round(g / scales[..., None]) + zeros[..., None]).clamp(0, 2**bits - 1)
    return q.reshape(w.shape).to(torch.int32), scales, zeros


def dequantize(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    group_size = q.shape[1] // scales.shape[1]
    g = grouped(q.float(), group_size)
    return ((g - zeros[..., None]) * scales[..., None]).reshape(q.shape)


def fake_quantize(w: torch.Tensor, group_size: int, bits: int) -> torch.Tensor:
    """Round-to-nearest: `w` after a quantize/dequantize round trip, in w's dtype."""
    return dequantize(*quantize(w, group_size, bits)).to(w.dtype)
