"""The int4 checkpoint formats `checkpoint_convert` reads and writes, as one common form:
per linear, integers q [out, in] in [0, 16), scales [out, in/G] and integer zeros [out, in/G],
weight = (q - zeros) * scales.

- AutoAWQ GEMM (`quant_method: awq`, version gemm): what tyllm.quant saves, AutoAWQ and
  llm-awq export, and vLLM loads with `--quantization awq`.
- compressed-tensors `pack-quantized` int4 group quantization (llmcompressor's W4A16),
  unpacked with the compressed-tensors library's own helper.
- tyllm's int4 layout (tyllm.quant.int4): what the compiler reads.
"""

from dataclasses import dataclass

import torch

from tyllm.errors import TyllmError
from tyllm.quant import int4
from tyllm.quant.pack import pack_linear, unpack_columns


@dataclass(frozen=True)
class Int4Tensors:
    q: torch.Tensor  # [out, in] integers in [0, 16)
    scales: torch.Tensor  # [out, groups], the checkpoint's float dtype
    zeros: torch.Tensor  # [out, groups] integers in [0, 16)


@dataclass(frozen=True)
class Format:
    """How one format names, reads and writes a quantized linear `module`."""

    name: str
    anchor: str  # the tensor whose presence marks a quantized linear
    companions: tuple[str, ...]

    def tensor_names(self, module: str) -> list[str]:
        return [f"{module}.{s}" for s in (self.anchor, *self.companions)]


AUTOAWQ = Format("awq", "qweight", ("qzeros", "scales"))
COMPRESSED = Format("compressed-tensors", "weight_packed",
                    ("weight_scale", "weight_zero_point", "weight_shape"))
TYLLM = Format(int4.QUANT_METHOD, "qweight", ("scales", "qzeros"))


def read_autoawq(get, module: str, group_size: int) -> Int4Tensors:
    qweight, qzeros, scales = (get(f"{module}.{s}") for s in ("qweight", "qzeros", "scales"))
    return Int4Tensors(unpack_columns(qweight).t().contiguous(), scales.t().contiguous(),
                      unpack_columns(qzeros).t().contiguous())


def read_compressed(get, module: str, group_size: int, symmetric: bool) -> Int4Tensors:
    try:
        from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    except ImportError as e:
        raise TyllmError("Reading compressed-tensors checkpoints needs the compressed-tensors "
                         "package (installed with vLLM): pip install compressed-tensors.") from e

    shape = torch.Size(get(f"{module}.weight_shape").tolist())
    scales = get(f"{module}.weight_scale")
    q = unpack_from_int32(get(f"{module}.weight_packed"), 4, shape).to(torch.int32) + 8
    if symmetric:
        zeros = torch.full(scales.shape, 8, dtype=torch.int32)
    else:
        zp_shape = torch.Size((shape[0], scales.shape[-1]))
        zeros = unpack_from_int32(get(f"{module}.weight_zero_point"), 4, zp_shape,
                                  packed_dim=0).to(torch.int32) + 8
    return Int4Tensors(q, scales, zeros)


def read_tyllm(get, module: str, group_size: int) -> Int4Tensors:
    qweight, scales = get(f"{module}.qweight"), get(f"{module}.scales")
    if 2 * qweight.shape[-1] != scales.shape[-1] * group_size:
        raise TyllmError(f"{module}: qweight {tuple(qweight.shape)} and scales "
                         f"{tuple(scales.shape)} do not match group_size={group_size} from "
                         f"quantization_config; the checkpoint's config does not describe its "
                         f"tensors.")
    q = int4.unpack_group_halves(qweight, group_size).to(torch.int32)
    return Int4Tensors(q, scales, get(f"{module}.qzeros").to(torch.int32))


def write_tyllm(module: str, linear: Int4Tensors, group_size: int) -> dict[str, torch.Tensor]:
    check_groups(module, linear, group_size)
    return {f"{module}.qweight": int4.pack_group_halves(linear.q, group_size),
            f"{module}.scales": linear.scales.contiguous(),
            f"{module}.qzeros": linear.zeros.to(torch.uint8).contiguous()}


def write_autoawq(module: str, linear: Int4Tensors, group_size: int) -> dict[str, torch.Tensor]:
    check_groups(module, linear, group_size)
    packed = pack_linear(linear.q, linear.scales, linear.zeros)  # fp16 scales, as AutoAWQ
    return {f"{module}.{k}": v for k, v in packed.items()}


def check_groups(module: str, linear: Int4Tensors, group_size: int) -> None:
    out, inputs = linear.q.shape
    if inputs % group_size or linear.scales.shape != (out, inputs // group_size):
        raise TyllmError(f"{module}: {inputs} inputs with scales {tuple(linear.scales.shape)} do "
                         f"not match group_size={group_size} from quantization_config; the "
                         f"checkpoint's config does not describe its tensors.")
    if int(linear.q.min()) < 0 or int(linear.q.max()) > 15:
        raise TyllmError(f"{module}: integer weights outside [0, 15]; the checkpoint is not "
                         f"4-bit.")
