"""The language model of a VLM: the decoder step fed embeddings and multimodal rope cos/sin.

Image features are merged into the text embeddings on the host; the die's `mrope/` graph turns the
3-axis positions into cos/sin [M, D]. Qwen3-VL also adds its deepstack features [K, M, H] (zeros
on text rows) to the outputs of the first K layers.
"""

import torch

from tyllm.capture.export import HISTORY_MASK, example_window
from tyllm.checkpoint import TensorReader
from tyllm.models.decoder import DecoderStep, caches_of
from tyllm.models.llama.weights import weight_table
from tyllm.models.loading import load_die_weights
from tyllm.models.vlm.spec import VlmSpec
from tyllm.quant.int4 import Int4Scheme
from tyllm.shard.plan import DiePlan

TEXT_PREFIXES = ("model.language_model.", "model.")
VISION_PREFIXES = ("model.visual.", "visual.")


def checkpoint_prefix(reader: TensorReader, prefixes: tuple[str, ...], probe: str) -> str:
    """Which naming the checkpoint uses (transformers 5 saves Qwen3-VL nested, Qwen2.5-VL flat)."""
    return next((p for p in prefixes if f"{p}{probe}" in reader.files), prefixes[-1])


class LanguageStep(DecoderStep):
    """Rows as DecoderStep's: one sequence, or B sequences one after the other (batched graphs:
    start_pos / last_index [B], history_mask [B, W], `row_caches` of sequences 1..B-1)."""

    def forward(self, inputs_embeds, rope_cos, rope_sin, start_pos, last_index, k_cache, v_cache,
                history_mask, *row_caches, taps=None):
        return self.run(inputs_embeds, rope_cos, rope_sin, last_index,
                        caches_of(k_cache, v_cache, row_caches), history_mask, taps=taps)


class DeepstackLanguageStep(DecoderStep):
    def forward(self, inputs_embeds, rope_cos, rope_sin, deepstack, start_pos, last_index,
                k_cache, v_cache, history_mask, *row_caches, taps=None):
        return self.run(inputs_embeds, rope_cos, rope_sin, last_index,
                        caches_of(k_cache, v_cache, row_caches), history_mask, deepstack, taps)


def deepstack_count(config) -> int:
    return len(getattr(config.vision_config, "deepstack_visual_indexes", None) or [])


def language_inputs(step: DecoderStep, seq_len: int, batch: int = 1) -> dict[str, torch.Tensor]:
    """Example inputs of a language graph; `batch` sequences' rows one after the other."""
    attn = step.layers[0].self_attn
    dtype, hidden, rows = step.norm.weight.dtype, step.norm.weight.shape[0], batch * seq_len
    kv_shape = (len(step.layers), attn.kv_heads, step.max_kv, attn.head_dim)
    inputs = {"inputs_embeds": torch.zeros(rows, hidden, dtype=dtype),
              "rope_cos": torch.zeros(rows, attn.head_dim, dtype=dtype),
              "rope_sin": torch.zeros(rows, attn.head_dim, dtype=dtype)}
    if isinstance(step, DeepstackLanguageStep):
        inputs["deepstack"] = torch.zeros(step.deepstack_layers, rows, hidden, dtype=dtype)
    mask = torch.zeros(example_window(step.max_kv), dtype=torch.bool)
    return inputs | {"start_pos": torch.zeros(batch, dtype=torch.int64),
                     "last_index": torch.zeros(batch, dtype=torch.int64),
                     "k_cache": torch.zeros(kv_shape, dtype=dtype),
                     "v_cache": torch.zeros(kv_shape, dtype=dtype),
                     HISTORY_MASK: mask if batch == 1 else mask.repeat(batch, 1),
                     **{f"{kv}_cache_{b}": torch.zeros(kv_shape, dtype=dtype)
                        for b in range(1, batch) for kv in "kv"}}


def language_step(spec: VlmSpec, config, plan: DiePlan, *, max_kv: int, dtype,
                  int4: Int4Scheme | None = None, panels: int | None = None) -> DecoderStep:
    """A die's language step, its weights not read (`build_language_step` reads them)."""
    deep = deepstack_count(config)
    cls = DeepstackLanguageStep if deep else LanguageStep
    step = cls(spec.text_dims(config), plan, seq_len=1, max_kv=max_kv, embedding_as_input=True,
               dtype=dtype, rope_tables=False, int4=int4, panels=panels)
    step.deepstack_layers = deep
    return step


def build_language_step(spec: VlmSpec, config, plan: DiePlan, reader: TensorReader,
                        prefix: str, *, max_kv: int, dtype,
                        int4: Int4Scheme | None = None, panels: int | None = None) -> DecoderStep:
    """`prefix`: where the decoder lives in the checkpoint (checkpoint_prefix); `panels`: the
    panel width of the backend's linear weights (or None)."""
    step = language_step(spec, config, plan, max_kv=max_kv, dtype=dtype, int4=int4,
                         panels=panels)
    load_die_weights(step, weight_table(spec.text_dims(config), True, prefix), plan, reader)
    return step.eval()
