"""Building one die's step module from a checkpoint: shard-by-shard weight reads, rope tables."""

import torch

from tyllm.checkpoint import TensorReader
from tyllm.errors import TyllmError
from tyllm.models.decoder import DecoderStep
from tyllm.models.spec import ArchSpec
from tyllm.shard.plan import DiePlan
from tyllm.shard.spec import shard_slices

SHARED_CONSTANTS = ("rope_cos", "rope_sin")  # the same for every seq_len graph
GRAPH_CONSTANTS = ("causal_mask",)  # specific to one seq_len graph


def rope_tables(arch: ArchSpec, config, max_kv: int, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [max_kv, head_dim] computed by the model's own HF rotary embedding."""
    rotary = arch.rotary_embedding(config)
    positions = torch.arange(max_kv).unsqueeze(0)
    probe = torch.zeros(1, dtype=dtype)
    cos, sin = rotary(probe, positions)
    return cos[0].to(dtype), sin[0].to(dtype)


def load_die_weights(step: DecoderStep, table, plan: DiePlan, reader: TensorReader, dtype):
    params = dict(step.named_parameters())
    for name, spec in table.items():
        full_ndim = params[name].dim()
        tensor = reader.read(spec.hf_name, shard_slices(spec.shard, plan, full_ndim))
        if tensor.shape != params[name].shape:
            raise TyllmError(f"Weight {spec.hf_name} has shape {tuple(tensor.shape)} on die "
                             f"{plan.die}, expected {tuple(params[name].shape)}: the checkpoint "
                             f"does not match its config.json.")
        params[name].data.copy_(tensor.to(dtype))


def build_die_step(arch: ArchSpec, config, plan: DiePlan, reader: TensorReader, *, max_kv: int,
                   embedding_as_input: bool, dtype) -> DecoderStep:
    dims = arch.dims_from_config(config)
    step = DecoderStep(dims, plan, seq_len=1, max_kv=max_kv,
                       embedding_as_input=embedding_as_input, dtype=dtype)
    load_die_weights(step, arch.weight_table(dims, embedding_as_input), plan, reader, dtype)
    cos, sin = rope_tables(arch, config, max_kv, dtype)
    step.rope_cos.data.copy_(cos)
    step.rope_sin.data.copy_(sin)
    return step.eval()
