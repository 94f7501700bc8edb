"""Architecture-neutral dimensions of a decoder-only transformer, read from a HF config."""

from dataclasses import dataclass

from tyllm.errors import TyllmError


@dataclass(frozen=True)
class DecoderDims:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads


def dims_from_hf_config(config, *, qkv_bias: bool, o_bias: bool, mlp_bias: bool, qk_norm: bool):
    """Reads the sizes every supported decoder shares; refuses activations we do not lower."""
    act = getattr(config, "hidden_act", "silu")
    if act != "silu":
        raise TyllmError(f"hidden_act={act!r} is not supported; tyllm lowers SwiGLU MLPs ('silu').")
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if heads % kv_heads:
        raise TyllmError(f"num_attention_heads={heads} is not a multiple of "
                         f"num_key_value_heads={kv_heads}; the config is inconsistent.")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return DecoderDims(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_layers=config.num_hidden_layers,
        num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        rms_norm_eps=float(config.rms_norm_eps),
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        qkv_bias=qkv_bias, o_bias=o_bias, mlp_bias=mlp_bias, qk_norm=qk_norm,
    )
