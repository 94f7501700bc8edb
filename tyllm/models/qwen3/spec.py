"""Qwen3: Llama names plus per-head RMSNorm on queries and keys (q_norm, k_norm)."""

from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

from tyllm.models.dims import dims_from_hf_config
from tyllm.models.llama.awq import LLAMA_AWQ
from tyllm.models.llama.weights import weight_table
from tyllm.models.spec import ArchSpec

QWEN3 = ArchSpec(
    name="qwen3",
    hf_architectures=("Qwen3ForCausalLM",),
    dims_from_config=lambda config: dims_from_hf_config(
        config, qkv_bias=bool(getattr(config, "attention_bias", False)),
        o_bias=bool(getattr(config, "attention_bias", False)), mlp_bias=False, qk_norm=True),
    weight_table=weight_table,
    rotary_embedding=lambda config: Qwen3RotaryEmbedding(config=config),
    awq=LLAMA_AWQ,
)
