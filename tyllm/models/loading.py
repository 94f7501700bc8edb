"""Building one die's step module from a checkpoint: shard-by-shard weight reads, rope tables."""

from collections import Counter
from dataclasses import replace

import torch

from tyllm.checkpoint import TensorReader
from tyllm.errors import TyllmError
from tyllm.models.decoder import DecoderStep, Int4Linear, panel_widths
from tyllm.models.panels import dense_shape, to_panels
from tyllm.models.spec import ArchSpec, WeightSpec
from tyllm.quant.int4 import Int4Scheme
from tyllm.shard.plan import DiePlan
from tyllm.shard.spec import Replicate, ShardDim, shard_slices

SHARED_CONSTANTS = ("rope_cos", "rope_sin")  # the same for every seq_len graph
GRAPH_CONSTANTS = ("causal_mask",)  # specific to one seq_len graph


def rope_tables(arch: ArchSpec, config, max_kv: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [max_kv, head_dim] computed by the model's own HF rotary embedding."""
    rotary = arch.rotary_embedding(config)
    positions = torch.arange(max_kv).unsqueeze(0)
    probe = torch.zeros(1, dtype=dtype)
    cos, sin = rotary(probe, positions)
    return cos[0].to(dtype), sin[0].to(dtype)


def die_weights(step: DecoderStep) -> dict:
    """The step's weights (what `common_die{d}.params` holds): its parameters but the graph
    constants (rope tables, causal mask), which are saved per graph."""
    return {n: p for n, p in step.named_parameters()
            if n not in SHARED_CONSTANTS + GRAPH_CONSTANTS}


def int4_specs(module: str, spec: WeightSpec, group_size: int) -> dict[str, WeightSpec]:
    """A float linear weight's entry as its int4 tensors; input-dim shards become byte and
    group shards."""
    source = spec.hf_name.removesuffix(".weight")
    per = {"qweight": 2, "scales": group_size, "qzeros": group_size}
    specs = {}
    for suffix, p in per.items():
        shard = spec.shard
        if isinstance(shard, ShardDim) and shard.dim == 1:
            shard = replace(shard, per=p)
        specs[f"{module}.{suffix}"] = WeightSpec(f"{source}.{suffix}", shard)
    return specs


def step_weight_table(step: DecoderStep, table: dict[str, WeightSpec]) -> dict[str, WeightSpec]:
    """The table the step's parameters read: an int4 linear reads qweight/scales/qzeros; a
    step with a tied head reads its embedding from the head."""
    int4 = {name: m for name, m in step.named_modules() if isinstance(m, Int4Linear)}
    resolved = {}
    for name, spec in table.items():
        if name == "embed_tokens" and step.tied_head:
            continue
        module = name.removesuffix(".weight")
        if module in int4:
            resolved |= int4_specs(module, spec, int4[module].group_size)
        else:
            resolved[name] = spec
    return resolved


def read_sources(entries: dict[str, WeightSpec], plan: DiePlan, reader: TensorReader, params,
                 panels: dict[str, int]):
    """Yields (parameter name, die slice) for every entry (`panels`: the parameters stored in
    panels, read as [N, K]). A checkpoint tensor that several
    entries read, one of them whole (a tied embedding / LM head), is read once, and each entry
    gets a view of it, so it is held once in memory; segments of a fused tensor (Phi-3's
    qkv_proj) are each read on their own, only the die's slice."""
    whole_reads = {spec.hf_name for spec in entries.values() if isinstance(spec.shard, Replicate)}
    sources = Counter(spec.hf_name for spec in entries.values() if spec.hf_name in whole_reads)
    whole: dict[str, torch.Tensor] = {}
    for name, spec in entries.items():
        slices = shard_slices(spec.shard, plan, len(dense_shape(params[name], panels.get(name))))
        if sources[spec.hf_name] <= 1:
            yield name, reader.read(spec.hf_name, slices).to(params[name].dtype)
            continue
        if spec.hf_name not in whole:
            whole[spec.hf_name] = reader.read(spec.hf_name).to(params[name].dtype)
        yield name, whole[spec.hf_name][slices].to(params[name].dtype)


def load_die_weights(step: DecoderStep, table, plan: DiePlan, reader: TensorReader):
    """Sets every parameter of the step to the die's slice of its table entry (in the
    parameter's dtype)."""
    params = dict(step.named_parameters())
    entries, panels = step_weight_table(step, table), panel_widths(step)
    for name, tensor in read_sources(entries, plan, reader, params, panels):
        expected = dense_shape(params[name], panels.get(name))
        if tensor.shape != expected:
            raise TyllmError(f"Weight {entries[name].hf_name} has shape {tuple(tensor.shape)} "
                             f"on die {plan.die}, expected {tuple(expected)}: the "
                             f"checkpoint does not match its config.json.")
        params[name].data = to_panels(tensor, panels.get(name))


def tied_head(table: dict[str, WeightSpec], plan: DiePlan, dims,
              embedding_as_input: bool) -> bool:
    """Whether the die's LM head is its whole embedding table (tied, one die's vocabulary)."""
    embed, head = table.get("embed_tokens"), table.get("lm_head")
    return (not embedding_as_input and embed is not None and head is not None
            and embed.hf_name == head.hf_name and len(plan.vocab) == dims.vocab_size)


def build_die_step(arch: ArchSpec, config, plan: DiePlan, reader: TensorReader, *, max_kv: int,
                   embedding_as_input: bool, dtype, int4: Int4Scheme | None = None,
                   panels: int | None = None) -> DecoderStep:
    """`panels`: the panel width the backend's matmuls read linear weights in (or None)."""
    dims = arch.dims_from_config(config)
    table = arch.weight_table(dims, embedding_as_input)
    step = DecoderStep(dims, plan, seq_len=1, max_kv=max_kv,
                       embedding_as_input=embedding_as_input, dtype=dtype, int4=int4,
                       panels=panels, tied_head=tied_head(table, plan, dims, embedding_as_input))
    load_die_weights(step, table, plan, reader)
    cos, sin = rope_tables(arch, config, max_kv, dtype)
    step.rope_cos.data.copy_(cos)
    step.rope_sin.data.copy_(sin)
    return step.eval()
