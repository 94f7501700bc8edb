"""Quantized checkpoints on disk in AutoAWQ's GEMM layout (`quant_method: awq`, version gemm),
which vLLM (`--quantization awq`) and AutoAWQ read; and back to a dequantized HF model."""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from tyllm.artifacts.manifest import CHECKPOINT_FORMAT, write_manifest
from tyllm.artifacts.staging import check_checkpoint_destination, write_atomically
from tyllm.checkpoint import TensorReader
from tyllm.errors import TyllmError
from tyllm.quant.awq import AwqConfig
from tyllm.quant.formats import Source, load_config_json, quantization_of, source_format
from tyllm.quant.groups import dequantize
from tyllm.quant.pack import pack_linear


@dataclass
class QuantizedModel:
    model: object  # the HF model, linears holding their dequantized int4 weights
    config: AwqConfig
    packed: dict  # module name -> {"q", "scales", "zeros"}


VISION_MODULES = ["visual"]  # a VLM's vision tower stays float (AutoAWQ's convention)


def quantization_config(config: AwqConfig, not_converted: list[str] | None = None) -> dict:
    return {"quant_method": "awq", "bits": config.bits, "group_size": config.group_size,
            "zero_point": config.zero_point, "version": "gemm",
            "modules_to_not_convert": not_converted}


def is_vlm_config(config) -> bool:
    return getattr(config, "vision_config", None) is not None


def save_quantized_model(quantized: QuantizedModel, out, tokenizer=None) -> Path:
    """Writes the AutoAWQ GEMM checkpoint into `out`: a new or empty folder, or one this function
    wrote before (its manifest lists exactly the files there); anything else is refused."""
    return write_atomically(Path(out), lambda staging: write_quantized(quantized, staging,
                                                                        tokenizer),
                            check_checkpoint_destination)


def write_quantized(quantized: QuantizedModel, out: Path, tokenizer) -> None:
    state = {}
    for name, tensor in quantized.model.state_dict().items():
        module, leaf = name.rsplit(".", 1)
        if module in quantized.packed and leaf == "weight":
            continue  # written below as qweight/qzeros/scales; a bias stays as it is
        state[name] = tensor.detach().to(torch.float16).contiguous()
    for module, t in quantized.packed.items():
        for key, value in pack_linear(t["q"], t["scales"], t["zeros"]).items():
            state[f"{module}.{key}"] = value
    if getattr(quantized.model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    config = quantized.model.config.to_dict()
    not_converted = VISION_MODULES if is_vlm_config(quantized.model.config) else None
    config.update(torch_dtype="float16", dtype="float16",
                  quantization_config=quantization_config(quantized.config, not_converted))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    write_manifest(out, CHECKPOINT_FORMAT)


def quantized_format(folder: Path) -> Source:
    """How to read any checkpoint checkpoint_convert reads (AutoAWQ GEMM, compressed-tensors
    W4A16, tyllm int4); a clear error for anything else."""
    return source_format(quantization_of(folder, load_config_json(folder)))


def dequantized_state(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors in float32, each quantized linear back to a dense weight."""
    fmt, group_size, read = quantized_format(folder)
    state = {}
    reader = TensorReader(folder)
    for name in reader.files:
        if not fmt.is_packed(name):
            state[name] = reader.read(name).float()
    for module in fmt.modules(reader.files):
        t = read(reader.read, module, group_size)
        state[f"{module}.weight"] = dequantize(t.q, t.scales.float(), t.zeros.float())
    return state


def load_quantized_model(folder):
    """The dequantized model as a float32 HF model (reference for the compiled int4 tree); a
    VLM comes back as its image-text-to-text class."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    folder = Path(folder)
    quantized_format(folder)  # refuses unknown formats before building the model
    config = AutoConfig.from_pretrained(folder)
    del config.quantization_config
    config.torch_dtype = torch.float32
    auto = AutoModelForImageTextToText if is_vlm_config(config) else AutoModelForCausalLM
    model = auto.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(dequantized_state(folder), strict=False)
    tied = any(getattr(c, "tie_word_embeddings", False) for c in (config, config.get_text_config()))
    missing = [k for k in result.missing_keys if not (tied and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        names = (missing or result.unexpected_keys)[:3]
        raise TyllmError(f"{folder}: tensor names do not match {type(model).__name__} "
                         f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected, "
                         f"e.g. {names}): the checkpoint was saved under another naming; "
                         f"re-save it with this transformers version.")
    model.tie_weights()
    return model.eval()
