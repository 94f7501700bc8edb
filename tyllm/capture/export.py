"""torch.export of a die step at one static seq_len, and its ONNX twin."""

from dataclasses import dataclass

import torch

from tyllm.models.decoder import DecoderStep, causal_mask


@dataclass(frozen=True)
class TensorDesc:
    name: str
    shape: tuple[int, ...]
    dtype: str

    def as_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def step_inputs(step: DecoderStep, seq_len: int) -> dict[str, torch.Tensor]:
    """Example inputs of a step graph, in call order. Names are the ones the runtime uses."""
    kv_shape = (len(step.layers), step.layers[0].self_attn.kv_heads, step.max_kv,
                step.layers[0].self_attn.head_dim)
    dtype = step.norm.weight.dtype
    if step.embed_tokens is None:
        tokens = ("inputs_embeds", torch.zeros(seq_len, step.norm.weight.shape[0], dtype=dtype))
    else:
        tokens = ("input_ids", torch.zeros(seq_len, dtype=torch.int64))
    return dict([tokens, ("start_pos", torch.zeros(1, dtype=torch.int64)),
                 ("last_index", torch.zeros(1, dtype=torch.int64)),
                 ("k_cache", torch.zeros(kv_shape, dtype=dtype)),
                 ("v_cache", torch.zeros(kv_shape, dtype=dtype))])


OUTPUT_NAMES = ("logits", "new_k", "new_v")


def describe(tensors: dict[str, torch.Tensor]) -> list[TensorDesc]:
    return [TensorDesc(n, tuple(t.shape), dtype_name(t.dtype)) for n, t in tensors.items()]


def describe_outputs(program: torch.export.ExportedProgram,
                     names: tuple[str, ...] = OUTPUT_NAMES) -> list[TensorDesc]:
    """The graph outputs, from the shapes torch.export traced."""
    output = next(n for n in program.graph.nodes if n.op == "output")
    values = [arg.meta["val"] for arg in output.args[0]]
    return describe(dict(zip(names, values, strict=True)))


def export_module(module: torch.nn.Module, inputs: dict[str, torch.Tensor]):
    """Decomposed ExportedProgram of `module` called with `inputs` (in order)."""
    with torch.no_grad():
        program = torch.export.export(module, tuple(inputs.values()))
    return program.run_decompositions()


def export_step(step: DecoderStep, seq_len: int, make_inputs=step_inputs):
    """Returns (decomposed ExportedProgram, example inputs) of the step at `seq_len` new tokens."""
    step.causal_mask = causal_mask(seq_len)
    inputs = make_inputs(step, seq_len)
    return export_module(step, inputs), inputs
