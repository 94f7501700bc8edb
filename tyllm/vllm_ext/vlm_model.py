"""vLLM's view of a compiled VLM tree: the architecture `TyllmVlmForConditionalGeneration`.

vLLM's own Qwen-VL code cannot serve here (it imports transformers' torchvision image processor)
and would not run the compiled dies anyway. This registers an architecture whose multimodal
processing is tyllm's (`tyllm.vlm.inputs`, the tree's compiled sizes and the HF PIL image
processor), so vLLM's front end (LLM.generate, the OpenAI server) expands image placeholders and
hands the EdgeX worker the pixel rows; the worker runs the tree. The model class is never built:
the worker replaces vLLM's model runner. Registered by the `vllm.general_plugins` entry point.
"""

from functools import cached_property

import torch
from torch import nn
from transformers import BatchFeature
from vllm.model_executor.models.interfaces import SupportsMultiModal
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
)

from tyllm.vlm.inputs import IMAGE_PAD, VISION_END, VISION_START

ARCH = "TyllmVlmForConditionalGeneration"
TREE_KEY = "tyllm_tree"  # the served config.json names its tree


class TreeProcessingInfo(BaseProcessingInfo):
    @cached_property
    def preprocessor(self):
        from tyllm.runtime.tree import Tree
        from tyllm.vlm.session import preprocessor_for

        return preprocessor_for(Tree(getattr(self.get_hf_config(), TREE_KEY)))

    def get_supported_mm_limits(self):
        return {"image": None}

    def get_hf_processor(self, **kwargs):
        raise RuntimeError("tyllm processes multimodal inputs itself (no HF processor)")

    def get_supported_mm_processor_kwargs(self):
        return {"text_kwargs": set(), "images_kwargs": set()}

    def max_image_tokens(self) -> int:
        pre = self.preprocessor
        return max(h * w for _, (h, w) in pre.sizes) // pre.merge**2

    def get_mm_max_tokens_per_item(self, seq_len, mm_counts):
        return {"image": self.max_image_tokens()}


class TreeDummyInputs(BaseDummyInputsBuilder[TreeProcessingInfo]):
    def get_dummy_text(self, mm_counts) -> str:
        return IMAGE_PAD * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len, mm_counts, mm_options):
        (height, width), _ = self.info.preprocessor.sizes[0]
        return {"image": self._get_dummy_images(width=width, height=height,
                                                num_images=mm_counts.get("image", 0),
                                                overrides=mm_options.get("image"))}


class TreeProcessor(BaseMultiModalProcessor[TreeProcessingInfo]):
    def _call_hf_processor(self, hf_data, hf_kwargs) -> BatchFeature:
        items = [self.info.preprocessor.image(image) for image in hf_data["images"]]
        return BatchFeature({
            "pixel_values": torch.cat([item.slices[0] for item in items]),
            "image_grid_thw": torch.tensor([[1, *item.grid] for item in items])})

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        grid = hf_inputs.get("image_grid_thw", torch.empty((0, 3), dtype=torch.long))
        return {"pixel_values": MultiModalFieldConfig.flat_from_sizes("image", grid.prod(-1)),
                "image_grid_thw": MultiModalFieldConfig.batched("image", keep_on_cpu=True)}

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        pad = self.info.get_hf_config().image_token_id
        merge = self.info.preprocessor.merge**2

        def replacement(index: int) -> list[int]:
            grid = out_mm_kwargs["image"][index]["image_grid_thw"].data
            return [pad] * (int(grid.prod()) // merge)

        return [PromptReplacement(modality="image", target=[pad], replacement=replacement)]


@MULTIMODAL_REGISTRY.register_processor(TreeProcessor, info=TreeProcessingInfo,
                                        dummy_inputs=TreeDummyInputs)
class TyllmVlmForConditionalGeneration(nn.Module, SupportsMultiModal):
    """Declares a compiled VLM tree to vLLM; tyllm's EdgeX worker runs it."""

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return f"{VISION_START}{IMAGE_PAD}{VISION_END}"
        raise ValueError(f"tyllm serves images through vLLM, not {modality}: use "
                         f"tyllm.runtime sessions (generate_multimodal) for videos.")

    def __init__(self, *, vllm_config, prefix: str = ""):
        raise RuntimeError(f"{ARCH} runs on tyllm's compiled dies: start the engine with "
                           f"tyllm's platform plugin (the default once tyllm is installed).")

    def embed_input_ids(self, input_ids, multimodal_embeddings=None, **kwargs):
        raise NotImplementedError("runs on tyllm's compiled dies")

    def embed_multimodal(self, **kwargs):
        raise NotImplementedError("runs on tyllm's compiled dies")

    def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None,
                **kwargs):
        raise NotImplementedError("runs on tyllm's compiled dies")

    def compute_logits(self, hidden_states):
        raise NotImplementedError("runs on tyllm's compiled dies")


def register() -> None:
    """The `vllm.general_plugins` entry point: makes the architecture known to vLLM."""
    from vllm import ModelRegistry

    if ARCH not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCH, f"{__name__}:{ARCH}")
