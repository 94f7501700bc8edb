"""Runs AWQ over a HF decoder (Llama, Qwen2, Qwen3 layouts: model.model.layers[i] with
input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp.{gate,up,down}_proj).
For a VLM (Qwen2-VL family: model.model.language_model.layers) only the language model is
quantized; the vision tower stays float."""

import torch
from torch import nn
from tqdm import tqdm

from tyllm.errors import TyllmError
from tyllm.models.spec import AwqLayout
from tyllm.quant.awq import (
    AwqConfig,
    apply_clip,
    fold_scales,
    quantize_linear,
    rows_sample,
    search_clip,
    search_scales,
)
from tyllm.quant.groups import check_group_size


class _Stop(Exception):
    pass


DECODER_PATHS = ("model.layers", "model.language_model.layers")  # causal LMs, then VLMs


def decoder_path(model) -> str:
    """Where the decoder layers live in `model` (and in its state dict)."""
    modules = dict(model.named_modules())
    for path in DECODER_PATHS:
        layers = modules.get(path)
        if isinstance(layers, nn.ModuleList) and len(layers) and all(
                hasattr(layers[0], a) for a in ("self_attn", "mlp")):
            return path
    raise TyllmError(f"{type(model).__name__} is not a Llama/Qwen-style decoder "
                     f"({' or '.join(DECODER_PATHS)} with self_attn and mlp): tyllm's AWQ "
                     f"cannot quantize it.")


def decoder_layers(model) -> nn.ModuleList:
    return model.get_submodule(decoder_path(model))


def linears_of(layer) -> dict[str, nn.Linear]:
    return {name: m for name, m in layer.named_modules() if isinstance(m, nn.Linear)}


@torch.no_grad()
def first_layer_inputs(model, samples: list[torch.Tensor]):
    """Hidden states entering layer 0 for the stacked samples, and the kwargs it is called with."""
    seen = {}

    def catch(_module, args, kwargs):
        seen["hidden"], seen["kwargs"] = args[0] if args else kwargs.pop("hidden_states"), kwargs
        raise _Stop

    handle = decoder_layers(model)[0].register_forward_pre_hook(catch, with_kwargs=True)
    try:
        model(torch.cat(samples), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen["hidden"], seen["kwargs"]


@torch.no_grad()
def run_layer(layer, hidden, kwargs, capture=()) -> tuple[torch.Tensor, dict]:
    inputs, modules = {}, dict(layer.named_modules())
    hooks = [modules[n].register_forward_hook(
        lambda _m, args, _out, n=n: inputs.__setitem__(n, args[0].detach())) for n in capture]
    try:
        out = layer(hidden, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return (out[0] if isinstance(out, tuple) else out), inputs


def awq_layout(model) -> AwqLayout:
    """The architecture registry's AWQ layout of `model` (a VLM: of its text layers). The
    registry imports every architecture's transformers classes: read only when quantizing (the
    runtime imports tyllm.quant for the int4 layout and must not load them)."""
    from tyllm.models.registry import text_arch_for_config

    arch = text_arch_for_config(model.config)
    if arch.awq is None:
        raise TyllmError(f"tyllm's AWQ does not quantize {arch.name} checkpoints yet (its "
                         f"registry entry has no AWQ layout): compile it in float16 or float32.")
    return arch.awq


def quantize_layer(layer, hidden, kwargs, cfg: AwqConfig, awq: AwqLayout) -> dict:
    """Scales, clips and quantizes one layer in place; returns {linear name: int tensors}."""

    for name, fc in linears_of(layer).items():
        check_group_size(fc.in_features, cfg.group_size, name)
    _, inputs = run_layer(layer, hidden, kwargs, awq.captured)
    x = {n: rows_sample(v.float(), cfg.max_search_tokens) for n, v in inputs.items()}
    for prev, linears, key in awq.scale_groups(layer):
        s = search_scales(x[key], linears, cfg)
        fold_scales(prev, linears, s)
        x[key] = x[key] / s
    packed = {}
    for name, fc in linears_of(layer).items():
        short = name.rsplit(".", 1)[-1]
        if cfg.apply_clip and short not in awq.no_clip:
            clip_x = rows_sample(x[awq.inputs_of[short]], cfg.max_clip_tokens)
            apply_clip(fc, search_clip(clip_x, fc.weight.data, cfg), cfg.group_size)
        packed[name] = quantize_linear(fc, cfg)
    return packed


@torch.no_grad()
def awq_quantize(model, samples: list[torch.Tensor], cfg: AwqConfig) -> dict:
    """Quantizes every decoder linear of `model` in place; returns {module name: int tensors}."""
    awq = awq_layout(model)
    hidden, kwargs = first_layer_inputs(model, samples)
    path, packed = decoder_path(model), {}
    for i, layer in enumerate(tqdm(decoder_layers(model), desc="AWQ", unit="layer")):
        for name, tensors in quantize_layer(layer, hidden, kwargs, cfg, awq).items():
            packed[f"{path}.{i}.{name}"] = tensors
        hidden, _ = run_layer(layer, hidden, kwargs)
    return packed
