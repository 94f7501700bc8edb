"""torch.export of a die step at one static seq_len (its KV window symbolic), and its ONNX twin."""

import copy
from dataclasses import dataclass

import torch

from tyllm.artifacts.windows import SMALLEST_LADDER
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


def step_inputs(step: DecoderStep, seq_len: int, batch: int = 1) -> dict[str, torch.Tensor]:
    """Example inputs of a step graph, in call order. Names are the ones the runtime uses. A
    batched graph (batch B > 1) takes B sequences' rows one after the other: tokens [B*M],
    start_pos / last_index [B], history_mask [B, W], then the caches of sequences 1..B-1."""
    kv_shape = (len(step.layers), step.layers[0].self_attn.kv_heads, step.max_kv,
                step.layers[0].self_attn.head_dim)
    dtype, rows = step.norm.weight.dtype, batch * seq_len
    if step.embedding_as_input:
        tokens = ("inputs_embeds", torch.zeros(rows, step.norm.weight.shape[0], dtype=dtype))
    else:
        tokens = ("input_ids", torch.zeros(rows, dtype=torch.int64))
    mask = torch.zeros(example_window(step.max_kv), dtype=torch.bool)
    return dict([tokens, ("start_pos", torch.zeros(batch, dtype=torch.int64)),
                 ("last_index", torch.zeros(batch, dtype=torch.int64)),
                 ("k_cache", torch.zeros(kv_shape, dtype=dtype)),
                 ("v_cache", torch.zeros(kv_shape, dtype=dtype)),
                 (HISTORY_MASK, mask if batch == 1 else mask.repeat(batch, 1)),
                 *((f"{kv}_cache_{b}", torch.zeros(kv_shape, dtype=dtype))
                   for b in range(1, batch) for kv in "kv")])


OUTPUT_NAMES = ("logits", "new_k", "new_v")
HISTORY_MASK = "history_mask"  # its length is the step's KV window (tyllm/artifacts/windows.py)


def describe(tensors: dict[str, torch.Tensor]) -> list[TensorDesc]:
    return [TensorDesc(n, tuple(t.shape), dtype_name(t.dtype)) for n, t in tensors.items()]


def describe_outputs(program: torch.export.ExportedProgram,
                     names: tuple[str, ...] = OUTPUT_NAMES) -> list[TensorDesc]:
    """The graph outputs, from the shapes torch.export traced."""
    output = next(n for n in program.graph.nodes if n.op == "output")
    values = [arg.meta["val"] for arg in output.args[0]]
    return describe(dict(zip(names, values, strict=True)))


def example_window(max_kv: int) -> int:
    """The window a step is traced at: below max_kv, or torch.export takes the slice of the
    cache for a no-op and fixes the window to max_kv (a cache below SMALLEST_LADDER positions
    has only that one window, traced static)."""
    return max_kv if max_kv < SMALLEST_LADDER else max_kv // 2


def window_shapes(inputs: dict[str, torch.Tensor], max_kv: int):
    """torch.export's dynamic_shapes: the history mask's last axis is the symbolic KV window (a
    cache of 2 positions has the one window 2). The traced range stops below max_kv, where
    torch would ask whether the cache slice is the whole (contiguous) cache; the program bound
    to max_kv computes the same slice, and verify checks it against the ONNX twin. The caches
    of a batched graph's sequences 1..B-1 are the step's variadic `row_caches`."""
    if example_window(max_kv) >= max_kv:
        return None
    window = torch.export.Dim("kv_window", min=2, max=max_kv - 1)
    names = list(inputs)
    fixed = names.index(HISTORY_MASK) + 1
    shapes = tuple({inputs[n].dim() - 1: window} if n == HISTORY_MASK else None
                   for n in names[:fixed])
    return (*shapes, (None,) * (len(names) - fixed)) if len(names) > fixed else shapes


def export_module(module: torch.nn.Module, inputs: dict[str, torch.Tensor],
                  dynamic_shapes=None):
    """Decomposed ExportedProgram of `module` called with `inputs` (in order)."""
    with torch.no_grad():
        program = torch.export.export(module, tuple(inputs.values()),
                                      dynamic_shapes=dynamic_shapes)
    return program.run_decompositions()


def export_step(step: DecoderStep, seq_len: int, make_inputs=step_inputs, batch: int = 1,
                verify: bool = False):
    """Returns (decomposed ExportedProgram, example inputs) of the step at `seq_len` new tokens
    per sequence (`batch` sequences), its KV window symbolic (bound per window when lowered).
    `verify`: last_index names every row, so the step returns every row's logits."""
    view = step_at(step, seq_len)
    inputs = make_inputs(view, seq_len) if batch == 1 else make_inputs(view, seq_len, batch)
    if verify:
        inputs["last_index"] = torch.zeros(batch * seq_len, dtype=torch.int64)
    return export_module(view, inputs, window_shapes(inputs, step.max_kv)), inputs


def step_at(step: DecoderStep, seq_len: int) -> DecoderStep:
    """The step for `seq_len` rows per sequence: the same submodules and weights with its own
    causal-mask constant; `step` itself is never changed (no module state set by call order)."""
    view = copy.copy(step)
    view._parameters = dict(step._parameters)
    view.causal_mask = causal_mask(seq_len)
    return view


def window_inputs(inputs: list[TensorDesc], window: int) -> list[TensorDesc]:
    """The input descriptions of a step's program bound to `window`."""
    return [TensorDesc(t.name, (*t.shape[:-1], window), t.dtype) if t.name == HISTORY_MASK
            else t for t in inputs]
