"""`checkpoint_convert`: quantized checkpoints between the formats of tyllm.quant.formats.

AutoAWQ GEMM or compressed-tensors pack-quantized -> tyllm's int4 layout (what the compiler
reads); tyllm's int4 layout -> AutoAWQ GEMM (what vLLM and AutoAWQ read). Every other tensor is
copied unchanged, shard files keep their names, and the destination appears only once complete.
"""

import json
import os
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

from safetensors import safe_open
from safetensors.torch import save_file

from tyllm.checkpoint import INDEX_FILE, TensorReader, weight_map
from tyllm.errors import TyllmError
from tyllm.quant import formats, int4
from tyllm.quant.awq import AwqConfig
from tyllm.quant.checkpoint import VISION_MODULES
from tyllm.quant.checkpoint import quantization_config as awq_quantization_config

QUANT_TYPES = ("awq",)


class Source(NamedTuple):
    """How to read a quantized checkpoint: its format, group size and per-linear reader."""

    fmt: formats.Format
    group_size: int
    read: Callable
CONVERTED_FROM = {"awq": "AutoAWQ GEMM", "compressed-tensors": "compressed-tensors",
                  int4.QUANT_METHOD: "tyllm int4"}


def load_config_json(src: Path) -> dict:
    path = src / "config.json"
    if not path.is_file():
        raise TyllmError(f"{src} has no config.json: pass the folder of a quantized checkpoint.")
    return json.loads(path.read_text())


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


def autoawq_source(q: dict):
    require(q, ("bits", "group_size", "zero_point"), "AutoAWQ")
    version = str(q.get("version", "gemm")).lower()
    if q["bits"] != 4 or not q["zero_point"] or version != "gemm":
        raise TyllmError(f"AutoAWQ checkpoint with bits={q['bits']}, zero_point="
                         f"{q['zero_point']}, version={version!r}: tyllm imports 4-bit GEMM "
                         f"checkpoints with zero points (re-export with version='gemm').")
    return Source(formats.AUTOAWQ, int(q["group_size"]), formats.read_autoawq)


REORDERING_ACTORDER = ("group", "dynamic", True)  # these need a g_idx permutation


def compressed_source(q: dict):
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
    read = partial(formats.read_compressed, symmetric=bool(weights.get("symmetric", True)))
    return Source(formats.COMPRESSED, int(weights["group_size"]), read)


def tyllm_source(q: dict):
    require(q, int4.REQUIRED, int4.QUANT_METHOD)
    if q["bits"] != 4:
        raise TyllmError(f"{int4.QUANT_METHOD} checkpoint with bits={q['bits']}: the layout is "
                         f"4-bit; re-run checkpoint_convert.py.")
    return Source(formats.TYLLM, int(q["group_size"]), formats.read_tyllm)


SOURCES = {"awq": autoawq_source, "compressed-tensors": compressed_source,
           int4.QUANT_METHOD: tyllm_source}


def source_format(q: dict) -> Source:
    method = q["quant_method"]
    if method not in SOURCES:
        raise TyllmError(f"quant_method {method!r} is not one tyllm converts: it reads AutoAWQ "
                         f"('awq', version gemm), compressed-tensors pack-quantized W4A16 and "
                         f"{int4.QUANT_METHOD!r}.")
    return SOURCES[method](q)


def check_quant_type(quant_type: str) -> None:
    if quant_type not in QUANT_TYPES:
        raise TyllmError(f"--quant_type {quant_type!r} is not supported: tyllm converts "
                         f"{list(QUANT_TYPES)} (W4A16 group-wise int4 with zero points).")


def convert_checkpoint(src, dst, quant_type: str = "awq") -> Path:
    """Converts `src` into `dst`: to tyllm's int4 layout, or back to AutoAWQ GEMM when `src`
    already is in tyllm's layout. Returns `dst`."""
    check_quant_type(quant_type)
    src, dst = Path(src), Path(dst)
    config = load_config_json(src)
    fmt, group_size, read = source_format(quantization_of(src, config))
    int4.check_even_group(group_size)
    target = formats.AUTOAWQ if fmt is formats.TYLLM else formats.TYLLM
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise TyllmError(f"{dst} exists and is not an empty folder: choose a new --dst; tyllm "
                         f"will not overwrite it.")
    staging = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        write_converted(src, staging, fmt, target, group_size, read)
        config["quantization_config"] = target_config(target, group_size, fmt, config)
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        copy_side_files(src, staging)
        if dst.exists():
            dst.rmdir()
        os.replace(staging, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dst


def target_config(target, group_size: int, source, config: dict) -> dict:
    if target is formats.AUTOAWQ:
        not_converted = VISION_MODULES if config.get("vision_config") else None
        return awq_quantization_config(AwqConfig(group_size=group_size), not_converted)
    return int4.Int4Scheme(group_size).as_json() | {"source": CONVERTED_FROM[source.name]}


def write_converted(src: Path, out: Path, fmt, target, group_size: int, read) -> None:
    files = weight_map(src)
    write = formats.write_tyllm if target is formats.TYLLM else formats.write_autoawq
    new_map = {}
    with TensorReader(src) as reader:
        for file in sorted(set(files.values())):
            tensors = convert_file(file, reader, fmt, group_size, read, write)
            save_file(tensors, str(out / file.name), metadata={"format": "pt"})
            new_map |= dict.fromkeys(tensors, file.name)
    if (src / INDEX_FILE).is_file():
        index = {"metadata": {}, "weight_map": dict(sorted(new_map.items()))}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=2))


def convert_file(file: Path, reader: TensorReader, fmt, group_size: int, read, write) -> dict:
    """The converted tensors of one shard file: each quantized linear goes where its anchor
    tensor was; companions stored elsewhere are read from their own files."""
    with safe_open(str(file), framework="pt") as f:
        names = list(f.keys())
    anchors = [n.removesuffix(f".{fmt.anchor}") for n in names if n.endswith(f".{fmt.anchor}")]
    quantized = {n for m in anchors for n in fmt.tensor_names(m)}
    tensors = {n: reader.read(n) for n in names if n not in quantized
               and not is_companion(n, fmt)}
    for module in anchors:
        tensors |= write(module, read(reader.read, module, group_size), group_size)
    return tensors


def is_companion(name: str, fmt) -> bool:
    """A companion tensor whose anchor lives in another file is written with that anchor."""
    return any(name.endswith(f".{c}") for c in fmt.companions)


def copy_side_files(src: Path, out: Path) -> None:
    """Tokenizer, generation and processor files: everything but weights and config.json."""
    for path in src.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name not in (
                "config.json", INDEX_FILE):
            shutil.copyfile(path, out / path.name)
