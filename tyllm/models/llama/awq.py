"""AWQ's view of a Llama-layout decoder layer (Llama, Qwen2, Qwen3 and the Qwen-VL text layers):
which inputs to capture, which linears share a scale, where each linear's clipping inputs are."""

from tyllm.models.spec import AwqLayout


def llama_scale_groups(layer) -> list:
    """(op whose output is scaled down, linears scaled up, captured input) per scale group."""
    attn, mlp = layer.self_attn, layer.mlp
    groups = [(layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj],
               "self_attn.q_proj"),
              (layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], "mlp.gate_proj"),
              (mlp.up_proj, [mlp.down_proj], "mlp.down_proj")]
    if attn.v_proj.weight.shape == attn.o_proj.weight.shape:  # no GQA: v's rows feed o
        groups.insert(1, (attn.v_proj, [attn.o_proj], "self_attn.o_proj"))
    return groups


LLAMA_AWQ = AwqLayout(
    captured=("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj"),
    scale_groups=llama_scale_groups,
    inputs_of={"q_proj": "self_attn.q_proj", "k_proj": "self_attn.q_proj",
               "v_proj": "self_attn.q_proj", "o_proj": "self_attn.o_proj",
               "gate_proj": "mlp.gate_proj", "up_proj": "mlp.gate_proj",
               "down_proj": "mlp.down_proj"},
    no_clip=("q_proj", "k_proj"))
