"""Phi-3 (Phi3ForCausalLM): Llama's step, but the checkpoint fuses q/k/v into one `qkv_proj`
and gate/up into one `gate_up_proj`. Each step linear reads its segment of the fused tensor
(ShardDim.offset), sharded like Llama's own tensor, so a die reads only its heads and columns."""

from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

from tyllm.errors import TyllmError
from tyllm.models.dims import DecoderDims, dims_from_hf_config
from tyllm.models.llama.weights import weight_table as llama_table
from tyllm.models.spec import ArchSpec, WeightSpec
from tyllm.shard.spec import ShardDim


def phi3_dims(config) -> DecoderDims:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    partial = rope.get("partial_rotary_factor") or getattr(config, "partial_rotary_factor", None)
    if partial not in (None, 1.0):
        raise TyllmError(f"partial_rotary_factor={partial}: tyllm's step rotates whole heads; "
                         f"Phi-3 checkpoints with partial rotary embeddings are not supported.")
    return dims_from_hf_config(config, qkv_bias=False, o_bias=False, mlp_bias=False,
                               qk_norm=False)


def fused_segments(i: int, dims: DecoderDims, prefix: str) -> dict[str, WeightSpec]:
    """Layer i's q/k/v and gate/up entries as segments of the fused tensors (rows, dim 0)."""
    attn, mlp, d = f"{prefix}layers.{i}.self_attn", f"{prefix}layers.{i}.mlp", dims.head_dim
    q_rows, kv_rows = dims.num_heads * d, dims.num_kv_heads * d
    qkv, gate_up = f"{attn}.qkv_proj.weight", f"{mlp}.gate_up_proj.weight"
    dst_attn, dst_mlp = f"layers.{i}.self_attn", f"layers.{i}.mlp"
    return {
        f"{dst_attn}.q_proj.weight": WeightSpec(qkv, ShardDim(0, "q_heads", d)),
        f"{dst_attn}.k_proj.weight": WeightSpec(qkv, ShardDim(0, "kv_heads", d, offset=q_rows)),
        f"{dst_attn}.v_proj.weight":
            WeightSpec(qkv, ShardDim(0, "kv_heads", d, offset=q_rows + kv_rows)),
        f"{dst_mlp}.gate_proj.weight": WeightSpec(gate_up, ShardDim(0, "ffn")),
        f"{dst_mlp}.up_proj.weight":
            WeightSpec(gate_up, ShardDim(0, "ffn", offset=dims.intermediate_size)),
    }


def weight_table(dims: DecoderDims, embedding_as_input: bool,
                 prefix: str = "model.") -> dict[str, WeightSpec]:
    table = llama_table(dims, embedding_as_input, prefix)
    for i in range(dims.num_layers):
        table |= fused_segments(i, dims, prefix)
    return table


PHI3 = ArchSpec(
    name="phi3",
    hf_architectures=("Phi3ForCausalLM",),
    dims_from_config=phi3_dims,
    weight_table=weight_table,
    rotary_embedding=lambda config: Phi3RotaryEmbedding(config=config),
)
