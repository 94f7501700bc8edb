"""Llama-family weight-name table: step parameter -> (HF checkpoint name, shard description)."""

from tyllm.models.dims import DecoderDims
from tyllm.models.spec import WeightSpec
from tyllm.shard.spec import Replicate, ShardDim

REP = Replicate()


def attention_table(i: int, dims: DecoderDims, prefix: str) -> dict[str, WeightSpec]:
    src, dst, d = f"{prefix}layers.{i}.self_attn", f"layers.{i}.self_attn", dims.head_dim
    table = {
        f"{dst}.q_proj.weight": WeightSpec(f"{src}.q_proj.weight", ShardDim(0, "q_heads", d)),
        f"{dst}.k_proj.weight": WeightSpec(f"{src}.k_proj.weight", ShardDim(0, "kv_heads", d)),
        f"{dst}.v_proj.weight": WeightSpec(f"{src}.v_proj.weight", ShardDim(0, "kv_heads", d)),
        f"{dst}.o_proj.weight": WeightSpec(f"{src}.o_proj.weight", ShardDim(1, "q_heads", d)),
    }
    if dims.qkv_bias:
        table[f"{dst}.q_proj.bias"] = WeightSpec(f"{src}.q_proj.bias", ShardDim(0, "q_heads", d))
        table[f"{dst}.k_proj.bias"] = WeightSpec(f"{src}.k_proj.bias", ShardDim(0, "kv_heads", d))
        table[f"{dst}.v_proj.bias"] = WeightSpec(f"{src}.v_proj.bias", ShardDim(0, "kv_heads", d))
    if dims.o_bias:
        table[f"{dst}.o_bias"] = WeightSpec(f"{src}.o_proj.bias", REP)
    if dims.qk_norm:
        table[f"{dst}.q_norm.weight"] = WeightSpec(f"{src}.q_norm.weight", REP)
        table[f"{dst}.k_norm.weight"] = WeightSpec(f"{src}.k_norm.weight", REP)
    return table


def mlp_table(i: int, dims: DecoderDims, prefix: str) -> dict[str, WeightSpec]:
    src, dst = f"{prefix}layers.{i}.mlp", f"layers.{i}.mlp"
    table = {
        f"{dst}.gate_proj.weight": WeightSpec(f"{src}.gate_proj.weight", ShardDim(0, "ffn")),
        f"{dst}.up_proj.weight": WeightSpec(f"{src}.up_proj.weight", ShardDim(0, "ffn")),
        f"{dst}.down_proj.weight": WeightSpec(f"{src}.down_proj.weight", ShardDim(1, "ffn")),
    }
    if dims.mlp_bias:
        table[f"{dst}.gate_proj.bias"] = WeightSpec(f"{src}.gate_proj.bias", ShardDim(0, "ffn"))
        table[f"{dst}.up_proj.bias"] = WeightSpec(f"{src}.up_proj.bias", ShardDim(0, "ffn"))
        table[f"{dst}.down_bias"] = WeightSpec(f"{src}.down_proj.bias", REP)
    return table


def layer_table(i: int, dims: DecoderDims, prefix: str) -> dict[str, WeightSpec]:
    table = {
        f"layers.{i}.input_layernorm.weight":
            WeightSpec(f"{prefix}layers.{i}.input_layernorm.weight", REP),
        f"layers.{i}.post_attention_layernorm.weight":
            WeightSpec(f"{prefix}layers.{i}.post_attention_layernorm.weight", REP),
    }
    return table | attention_table(i, dims, prefix) | mlp_table(i, dims, prefix)


def weight_table(dims: DecoderDims, embedding_as_input: bool,
                 prefix: str = "model.") -> dict[str, WeightSpec]:
    """`prefix`: where the decoder lives in the checkpoint ("model." for causal LMs; VLMs use
    "model.language_model." or, in older checkpoints, "model.")."""
    head = f"{prefix}embed_tokens.weight" if dims.tie_word_embeddings else "lm_head.weight"
    table = {"norm.weight": WeightSpec(f"{prefix}norm.weight", REP),
             "lm_head": WeightSpec(head, ShardDim(0, "vocab"))}
    if not embedding_as_input:
        table["embed_tokens"] = WeightSpec(f"{prefix}embed_tokens.weight", REP)
    for i in range(dims.num_layers):
        table |= layer_table(i, dims, prefix)
    return table
