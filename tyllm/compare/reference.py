"""HF transformers' values at the tap points (points.py): the checkpoint in float32, one forward
over the prompt with hooks on each decoder layer's o_proj, down_proj and output. A die's
partial sums (before its all-reduce) are the die's input columns times the same columns of the
HF weight: what the die computes before the dies' partials are added."""

from contextlib import contextmanager
from pathlib import Path

import torch

from tyllm.compare.points import split
from tyllm.compare.shares import die_share
from tyllm.compare.vision import hook_vision
from tyllm.errors import TyllmError
from tyllm.shard.plan import DiePlan


def load_reference(folder: Path):
    """(the checkpoint as a float32 HF model, whether it is quantized): a causal LM, or a VLM's
    image-text-to-text model; an int4 (AWQ) checkpoint comes back with its dequantized
    weights, the values an int4 tree is compiled from."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    from tyllm.quant.checkpoint import is_vlm_config, load_quantized_model

    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "quantization_config", None):
        return load_quantized_model(folder), True
    auto = AutoModelForImageTextToText if is_vlm_config(config) else AutoModelForCausalLM
    return auto.from_pretrained(folder, dtype=torch.float32).eval(), False


def first(output):
    return output[0] if isinstance(output, tuple) else output


def decoder_of(model):
    """The decoder stack of a causal LM or of a VLM's language model."""
    return getattr(model.model, "language_model", model.model)


def row(value: torch.Tensor, batched: bool) -> torch.Tensor:
    """A hooked value as float32, batch row 0 where it has a batch axis."""
    value = first(value).detach().float()
    return value[0] if batched else value


@contextmanager
def hooked(model):
    """Records every tap point's full value while the model runs (a VLM's vision tower too):
    yields the dict that fills."""
    values: dict = {}

    def keep(name, inputs=False, batched=True):
        def hook(module, args, output):
            values[name] = row(args[0] if inputs else output, batched)
        return hook

    def keep_input(name, batched=True):
        def hook(module, args, kwargs):
            values[name] = row(args[0] if args else kwargs["hidden_states"], batched)
        return hook

    inner = decoder_of(model)
    handles = [inner.layers[0].register_forward_pre_hook(keep_input("embedding"),
                                                         with_kwargs=True),
               inner.norm.register_forward_hook(keep("norm"))]
    for i, layer in enumerate(inner.layers):
        p = f"layers.{i}."
        handles += [
            layer.self_attn.o_proj.register_forward_hook(keep(p + "attention.input", True)),
            layer.self_attn.o_proj.register_forward_hook(keep(p + "attention.output")),
            layer.mlp.down_proj.register_forward_hook(keep(p + "mlp.input", True)),
            layer.mlp.down_proj.register_forward_hook(keep(p + "mlp.output")),
            layer.register_forward_hook(keep(p + "layer.output")),
        ]
    if hasattr(model.model, "visual"):
        handles += hook_vision(model, lambda name, inputs=False: keep(name, inputs, False),
                               lambda name: keep_input(name, False))
    try:
        yield values
    finally:
        for handle in handles:
            handle.remove()


def reference_values(model, input_ids: list[int], extra: dict | None = None) -> dict:
    """Every tap point over the prompt ([T, ...] float32), and the last token's logits;
    `extra`: the forward's other inputs (a VLM's pixels)."""
    with torch.no_grad(), hooked(model) as values:
        out = model(input_ids=torch.tensor([input_ids]), use_cache=False, **(extra or {}))
    return values | {"logits": out.logits[0, -1].float()}


def die_values(model, values: dict, plan: DiePlan, head_dim: int) -> dict:
    """The HF values a language die's taps are compared with: the shared values, the die's
    partial sums and its vocabulary slice of the logits."""
    heads = range(plan.q_heads.start * head_dim, plan.q_heads.stop * head_dim)
    layers, out = decoder_of(model).layers, {}
    for name, value in values.items():
        tower, layer, point = split(name)
        if tower == "vision":
            continue
        if point == "attention.input":
            weight = layers[layer].self_attn.o_proj.weight
            out[f"layers.{layer}.attention.partial"] = die_share(value, weight, heads)
        elif point == "mlp.input":
            weight = layers[layer].mlp.down_proj.weight
            out[f"layers.{layer}.mlp.partial"] = die_share(value, weight, plan.ffn)
        elif name == "logits":
            out[name] = value[plan.vocab.start:plan.vocab.stop]
        else:
            out[name] = value
    return out


TEXT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "intermediate_size", "vocab_size")


def shape_facts(config: dict) -> dict:
    """What must agree between a tree and its checkpoint: architecture and shapes (a VLM's
    language model's and its vision tower's)."""
    text = config.get("text_config") or config
    facts = {"model_type": config.get("model_type")} | {k: text.get(k) for k in TEXT_KEYS}
    if vision := config.get("vision_config"):
        facts |= {"vision depth": vision.get("depth"),
                  "vision hidden_size": vision.get("hidden_size") or vision.get("embed_dim")}
    return facts


def check_matches(tree_config: dict, model, folder: Path, tree_root: Path) -> None:
    """The checkpoint must be the tree's model: same architecture and shapes."""
    mine, theirs = shape_facts(tree_config["hf_config"]), shape_facts(model.config.to_dict())
    differ = [f"{k} {theirs[k]} vs {mine[k]}" for k in mine if theirs[k] != mine[k]]
    if differ:
        raise TyllmError(f"{folder} is not the model {tree_root} was compiled from "
                         f"({'; '.join(differ)} in the checkpoint vs the tree): pass --model the "
                         f"checkpoint the tree was built from.")
