"""Qwen2 / Qwen2.5 (also Qwen1.5 and DeepSeek-R1-Distill-Qwen): Llama names plus q/k/v biases."""

from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

from tyllm.models.dims import dims_from_hf_config
from tyllm.models.llama.awq import LLAMA_AWQ
from tyllm.models.llama.weights import weight_table
from tyllm.models.spec import ArchSpec

QWEN2 = ArchSpec(
    name="qwen2",
    hf_architectures=("Qwen2ForCausalLM",),
    dims_from_config=lambda config: dims_from_hf_config(
        config, qkv_bias=True, o_bias=False, mlp_bias=False, qk_norm=False),
    weight_table=weight_table,
    rotary_embedding=lambda config: Qwen2RotaryEmbedding(config=config),
    awq=LLAMA_AWQ,
)
