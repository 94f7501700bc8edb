"""`checkpoint_convert`: quantized checkpoints between the formats of tyllm.quant.formats.

AutoAWQ GEMM or compressed-tensors pack-quantized -> tyllm's int4 layout (what the compiler
reads); tyllm's int4 layout -> AutoAWQ GEMM (what vLLM and AutoAWQ read). Every other tensor is
copied unchanged, shard files keep their names, and the destination appears only once complete.
"""

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from tyllm.artifacts.layout import MANIFEST
from tyllm.artifacts.staging import write_atomically
from tyllm.checkpoint import INDEX_FILE, TensorReader
from tyllm.errors import TyllmError
from tyllm.quant import formats, int4
from tyllm.quant.awq import AwqConfig
from tyllm.quant.checkpoint import VISION_MODULES
from tyllm.quant.checkpoint import quantization_config as awq_quantization_config

QUANT_TYPES = ("awq",)
CONVERTED_FROM = {"awq": "AutoAWQ GEMM", "compressed-tensors": "compressed-tensors",
                  int4.QUANT_METHOD: "tyllm int4"}


def check_quant_type(quant_type: str) -> None:
    if quant_type not in QUANT_TYPES:
        raise TyllmError(f"--quant_type {quant_type!r} is not supported: tyllm converts "
                         f"{list(QUANT_TYPES)} (W4A16 group-wise int4 with zero points).")


def convert_checkpoint(src, dst, quant_type: str = "awq") -> Path:
    """Converts `src` into `dst`: to tyllm's int4 layout, or back to AutoAWQ GEMM when `src`
    already is in tyllm's layout. Returns `dst`."""
    check_quant_type(quant_type)
    src, dst = Path(src), Path(dst)
    config = formats.load_config_json(src)
    fmt, group_size, read = formats.source_format(formats.quantization_of(src, config))
    int4.check_even_group(group_size)
    target = formats.AUTOAWQ if fmt is formats.TYLLM else formats.TYLLM

    def write(staging: Path) -> None:
        write_converted(src, staging, fmt, target, group_size, read)
        config["quantization_config"] = target_config(target, group_size, fmt, config)
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        copy_side_files(src, staging)

    return write_atomically(dst, write, check_new_destination)


def check_new_destination(dst: Path) -> None:
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise TyllmError(f"{dst} exists and is not an empty folder: choose a new --dst; tyllm "
                         f"will not overwrite it.")


def target_config(target, group_size: int, source, config: dict) -> dict:
    if target is formats.AUTOAWQ:
        not_converted = VISION_MODULES if config.get("vision_config") else None
        return awq_quantization_config(AwqConfig(group_size=group_size), not_converted)
    return int4.Int4Scheme(group_size).as_json() | {"source": CONVERTED_FROM[source.name]}


def write_converted(src: Path, out: Path, fmt, target, group_size: int, read) -> None:
    write = formats.write_tyllm if target is formats.TYLLM else formats.write_autoawq
    new_map = {}
    reader = TensorReader(src)
    for file in sorted(set(reader.files.values())):
        tensors = convert_file(file, reader, fmt, group_size, read, write)
        save_file(tensors, str(out / file.name), metadata={"format": "pt"})
        new_map |= dict.fromkeys(tensors, file.name)
    if (src / INDEX_FILE).is_file():
        index = {"metadata": {}, "weight_map": dict(sorted(new_map.items()))}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=2))


def convert_file(file: Path, reader: TensorReader, fmt, group_size: int, read, write) -> dict:
    """The converted tensors of one shard file: each quantized linear goes where its anchor
    tensor was; companions stored elsewhere are read from their own files."""
    names = [n for n, f in reader.files.items() if f == file]
    tensors = {n: reader.read(n) for n in names if not fmt.is_packed(n)}
    for module in fmt.modules(names):
        tensors |= write(module, read(reader.read, module, group_size), group_size)
    return tensors


def copy_side_files(src: Path, out: Path) -> None:
    """Tokenizer, generation and processor files: everything but weights and config.json."""
    for path in src.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name not in (
                "config.json", INDEX_FILE, MANIFEST):
            shutil.copyfile(path, out / path.name)
