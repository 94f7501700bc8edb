"""AWQ W4A16 quantization with the seed toolchain's API.

    dataloader = get_dataloader(texts_or_dataset, tokenizer, num_max_orig_samples=128,
                                max_sequence_length=512, column="article", concat_data=True)
    quantized = quantize_model(model, get_awq_config(group_size=64, apply_clip=True),
                               dataloader, tokenizer)
    save_quantized_model(quantized, "SmolLM2-AWQ", tokenizer)   # AutoAWQ GEMM layout
    model = load_quantized_model("SmolLM2-AWQ")                  # dequantized HF model
"""

from tyllm.errors import TyllmError
from tyllm.quant.awq import AwqConfig
from tyllm.quant.checkpoint import QuantizedModel, load_quantized_model, save_quantized_model
from tyllm.quant.data import get_dataloader
from tyllm.quant.layers import awq_quantize

__all__ = ["AwqConfig", "QuantizedModel", "get_awq_config", "get_dataloader",
           "load_quantized_model", "quantize_model", "save_quantized_model"]


def get_awq_config(group_size: int = 128, apply_clip: bool = True, bits: int = 4,
                   zero_point: bool = True, n_grid: int = 20, max_shrink: float = 0.5,
                   max_search_tokens: int = 4096) -> AwqConfig:
    if bits != 4 or not zero_point:
        raise TyllmError("tyllm's AWQ writes W4 with zero points (AutoAWQ GEMM): use bits=4, "
                         "zero_point=True.")
    return AwqConfig(bits=bits, group_size=group_size, zero_point=zero_point,
                     apply_clip=apply_clip, n_grid=n_grid, max_shrink=max_shrink,
                     max_search_tokens=max_search_tokens)


def quantize_model(model, config: AwqConfig, dataloader, tokenizer=None) -> QuantizedModel:
    """AWQ in place on a float HF model (CPU); returns it with its int4 tensors."""
    model = model.float().eval()
    return QuantizedModel(model, config, awq_quantize(model, list(dataloader), config))
