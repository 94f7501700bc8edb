from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from tyllm.models.dims import dims_from_hf_config
from tyllm.models.llama.awq import LLAMA_AWQ
from tyllm.models.llama.weights import weight_table
from tyllm.models.spec import ArchSpec


def llama_dims(config):
    bias = bool(getattr(config, "attention_bias", False))
    return dims_from_hf_config(config, qkv_bias=bias, o_bias=bias,
                               mlp_bias=bool(getattr(config, "mlp_bias", False)), qk_norm=False)


LLAMA = ArchSpec(
    name="llama",
    hf_architectures=("LlamaForCausalLM",),
    dims_from_config=llama_dims,
    weight_table=weight_table,
    rotary_embedding=lambda config: LlamaRotaryEmbedding(config=config),
    awq=LLAMA_AWQ,
)
