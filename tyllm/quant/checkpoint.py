"""Quantized checkpoints on disk in AutoAWQ's GEMM layout (`quant_method: awq`, version gemm),
which vLLM (`--quantization awq`) and AutoAWQ read; and back to a dequantized HF model."""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tyllm.errors import TyllmError
from tyllm.quant.awq import AwqConfig
from tyllm.quant.groups import dequantize
from tyllm.quant.pack import pack_linear, unpack_linear

REQUIRED = ("quant_method", "bits", "group_size", "zero_point")


@dataclass
class QuantizedModel:
    model: object  # the HF model, linears holding their dequantized int4 weights
    config: AwqConfig
    packed: dict  # module name -> {"q", "scales", "zeros"}


def quantization_config(config: AwqConfig) -> dict:
    return {"quant_method": "awq", "bits": config.bits, "group_size": config.group_size,
            "zero_point": config.zero_point, "version": "gemm",
            "modules_to_not_convert": None}


def save_quantized_model(quantized: QuantizedModel, out, tokenizer=None) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in quantized.model.state_dict().items():
        module = name.rsplit(".", 1)[0]
        if module in quantized.packed:
            continue  # written below as qweight/qzeros/scales (+ bias)
        state[name] = tensor.detach().to(torch.float16).contiguous()
    for module, t in quantized.packed.items():
        for key, value in pack_linear(t["q"], t["scales"], t["zeros"]).items():
            state[f"{module}.{key}"] = value
    if getattr(quantized.model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    config = quantized.model.config.to_dict()
    config.update(torch_dtype="float16", dtype="float16",
                  quantization_config=quantization_config(quantized.config))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def read_quantization_config(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    q = config.get("quantization_config")
    if q is None:
        raise TyllmError(f"{folder}/config.json has no quantization_config: this is not a "
                         f"quantized checkpoint.")
    if missing := [k for k in REQUIRED if k not in q]:
        raise TyllmError(f"{folder}/config.json quantization_config lacks {missing}: an AWQ "
                         f"checkpoint needs quant_method, bits, group_size and zero_point.")
    if q.get("quant_method", "awq") != "awq":
        raise TyllmError(f"quant_method {q['quant_method']!r} is not supported: tyllm reads "
                         f"AWQ (quant_method 'awq', version 'gemm').")
    return q


def dequantized_state(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors in float32, each packed linear back to a dense weight."""
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        tensors |= load_file(path)
    state = {}
    for name, t in tensors.items():
        if name.endswith(".qweight"):
            module = name[:-len(".qweight")]
            q, scales, zeros = unpack_linear(t, tensors[f"{module}.qzeros"],
                                             tensors[f"{module}.scales"])
            state[f"{module}.weight"] = dequantize(q, scales, zeros)
        elif not name.endswith((".qzeros", ".scales")):
            state[name] = t.float()
    return state


def load_quantized_model(folder):
    """The dequantized model as a float32 HF model (reference for the compiled int4 tree)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    read_quantization_config(folder)
    config = AutoConfig.from_pretrained(folder)
    del config.quantization_config
    config.torch_dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantized_state(folder), strict=False)
    model.tie_weights()
    return model.eval()
