"""The int4 checkpoint formats `checkpoint_convert` reads and writes, as one common form:
per linear, integers q [out, in] in [0, 16), scales [out, in/G] and integer zeros [out, in/G],
weight = (q - zeros) * scales.

- AutoAWQ GEMM (`quant_method: awq`, version gemm): what tyllm.quant saves, AutoAWQ and
  llm-awq export, and vLLM loads with `--quantization awq`.
- compressed-tensors `pack-quantized` int4 group quantization (llmcompressor's W4A16),
  unpacked with the compressed-tensors library's own helper.
- tyllm's int4 layout (tyllm.quant.int4): what the compiler reads.

`source_format` reads a checkpoint's `quantization_config` into a `Source` (format, group size,
reader) or refuses it with the reason; checkpoint_convert and load_quantized_model share it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch

from tyllm.checkpoint import read_json_file
from tyllm.compile.request import check_model_folder
from tyllm.errors import TyllmError
from tyllm.quant import int4
from tyllm.quant.pack import pack_linear, unpack_linear


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

    def modules(self, names) -> list[str]:
        """The quantized linears among tensor `names` (those whose anchor is there)."""
        return [n.removesuffix(f".{self.anchor}") for n in names if n.endswith(f".{self.anchor}")]

    def is_packed(self, name: str) -> bool:
        """Whether tensor `name` is part of a quantized linear (anchor or companion)."""
        return any(name.endswith(f".{s}") for s in (self.anchor, *self.companions))


AUTOAWQ = Format("awq", "qweight", ("qzeros", "scales"))
COMPRESSED = Format("compressed-tensors", "weight_packed",
                    ("weight_scale", "weight_zero_point", "weight_shape"))
TYLLM = Format(int4.QUANT_METHOD, int4.SUFFIXES[0], int4.SUFFIXES[1:])


def read_autoawq(get, module: str, group_size: int) -> Int4Tensors:
    return Int4Tensors(*unpack_linear(*(get(f"{module}.{s}")
                                        for s in ("qweight", "qzeros", "scales"))))


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


class Source(NamedTuple):
    """How to read a quantized checkpoint: its format, group size and per-linear reader."""

    fmt: Format
    group_size: int
    read: Callable  # read(get_tensor, module, group_size) -> Int4Tensors


def load_config_json(src: Path) -> dict:
    check_model_folder(src)
    path = src / "config.json"
    if not path.is_file():
        raise TyllmError(f"{src} has no config.json: pass the folder of a quantized checkpoint.")
    return read_json_file(path)


def quantization_of(src: Path, config: dict) -> dict:
    q = config.get("quantization_config")
    if q is None:
        raise TyllmError(f"{src}/config.json has no quantization_config: this is a float "
                         f"checkpoint. Quantize it first (tyllm.quant.quantize_model + "
                         f"save_quantized_model), or compile it as it is.")
    if "quant_method" not in q:
        raise TyllmError(f"{src}/config.json quantization_config lacks ['quant_method']: "
                         f"expected 'awq', 'compressed-tensors' or {int4.QUANT_METHOD!r}.")
    return q


def require(q: dict, keys: tuple[str, ...], what: str) -> None:
    if missing := [k for k in keys if k not in q]:
        raise TyllmError(f"quantization_config lacks {missing}: a {what} checkpoint needs "
                         f"{list(keys)}.")


def autoawq_source(q: dict) -> Source:
    require(q, ("bits", "group_size", "zero_point"), "AutoAWQ")
    version = str(q.get("version", "gemm")).lower()
    if q["bits"] != 4 or not q["zero_point"] or version != "gemm":
        raise TyllmError(f"AutoAWQ checkpoint with bits={q['bits']}, zero_point="
                         f"{q['zero_point']}, version={version!r}: tyllm imports 4-bit GEMM "
                         f"checkpoints with zero points (re-export with version='gemm').")
    return Source(AUTOAWQ, int(q["group_size"]), read_autoawq)


REORDERING_ACTORDER = ("group", "dynamic", True)  # these need a g_idx permutation


def compressed_source(q: dict) -> Source:
    require(q, ("format", "config_groups"), "compressed-tensors")
    groups = q["config_groups"]
    if not isinstance(groups, dict) or len(groups) != 1:
        raise TyllmError("compressed-tensors config_groups must hold exactly one group: tyllm "
                         "imports one W4A16 scheme for all decoder linears.")
    group = next(iter(groups.values())) or {}
    weights = group.get("weights") or {}
    problems = [
        (q["format"] != "pack-quantized", f"format {q['format']!r} (need 'pack-quantized')"),
        (bool(group.get("input_activations")), "activation quantization (need weight-only)"),
        (weights.get("num_bits") != 4 or weights.get("type", "int") != "int",
         f"{weights.get('num_bits')}-bit {weights.get('type')} weights (need 4-bit int)"),
        (weights.get("strategy") != "group" or not weights.get("group_size"),
         f"strategy {weights.get('strategy')!r} (need 'group' with a group_size)"),
        (weights.get("actorder") in REORDERING_ACTORDER,
         f"actorder {weights.get('actorder')!r} (a g_idx permutation)"),
    ]
    if bad := [text for failed, text in problems if failed]:
        raise TyllmError(f"compressed-tensors checkpoint with {', '.join(bad)}: tyllm imports "
                         f"W4A16 group quantization; re-export it with that scheme.")
    read = partial(read_compressed, symmetric=bool(weights.get("symmetric", True)))
    return Source(COMPRESSED, int(weights["group_size"]), read)


def tyllm_source(q: dict) -> Source:
    return Source(TYLLM, int4.scheme_from_config(q).group_size, read_tyllm)


SOURCES = {"awq": autoawq_source, "compressed-tensors": compressed_source,
           int4.QUANT_METHOD: tyllm_source}


def source_format(q: dict) -> Source:
    method = q["quant_method"]
    if method not in SOURCES:
        raise TyllmError(f"quant_method {method!r} is not one tyllm converts: it reads AutoAWQ "
                         f"('awq', version gemm), compressed-tensors pack-quantized W4A16 and "
                         f"{int4.QUANT_METHOD!r}.")
    return SOURCES[method](q)
