"""vLLM's view of a compiled VLM tree: the architecture `TyllmVlmForConditionalGeneration`.

vLLM's own Qwen-VL code cannot serve here (it imports transformers' torchvision image processor)
and would not run the compiled dies anyway. This registers an architecture whose multimodal
processing is tyllm's (`tyllm.runtime.vlm.inputs`, the tree's compiled sizes and the HF PIL image
processor), so vLLM's front end (LLM.generate, the OpenAI server) expands image placeholders and
hands the EdgeX worker the pixel rows; the worker runs the tree. The model class is never built:
the worker replaces vLLM's model runner. Registered by the `vllm.general_plugins` entry point,
also under the VLM checkpoints' own architectures (an engine started on a checkpoint: the tree is
compiled first, vlm_engine.py).
"""

from functools import cached_property

import numpy as np
import torch
from PIL import Image
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
    PromptUpdateDetails,
)

from tyllm.compile.vlm_request import MODALITIES
from tyllm.errors import TyllmError
from tyllm.runtime.vlm.inputs import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START, VisionItem
from tyllm.vllm_ext.tree_model import TREE_KEY, VLM_ARCH

ARCH = VLM_ARCH
VIDEO_FPS = 2.0  # frames given to vLLM are taken as sampled at this rate (as generate_multimodal)


class TreeProcessingInfo(BaseProcessingInfo):
    @cached_property
    def preprocessor(self):
        from tyllm.runtime.tree import Tree
        from tyllm.runtime.vlm.session import preprocessor_for

        tree = getattr(self.get_hf_config(), TREE_KEY, None)
        if tree is None:
            raise TyllmError(f"{ARCH} serves compiled VLM trees: start the engine on tyllm's "
                             f"platform (the default once tyllm is installed).")
        return preprocessor_for(Tree(tree))

    def get_supported_mm_limits(self):
        if getattr(self.get_hf_config(), TREE_KEY, None) is None:  # asked before the tree exists
            return {m: None for m in MODALITIES}
        return {m: None for m in self.preprocessor.modalities}

    def get_hf_processor(self, **kwargs):
        raise RuntimeError("tyllm processes multimodal inputs itself (no HF processor)")

    def get_supported_mm_processor_kwargs(self):
        return {"text_kwargs": set(), "images_kwargs": set(), "videos_kwargs": set()}

    def max_image_tokens(self) -> int:
        pre = self.preprocessor
        return max(h * w for _, (h, w) in pre.sizes) // pre.merge**2

    def get_mm_max_tokens_per_item(self, seq_len, mm_counts):
        # a video is bounded by the context: vLLM checks the expanded prompt against it
        return {m: self.max_image_tokens() if m == "image" else seq_len
                for m in self.preprocessor.modalities}

    def video_tokens(self, grid, frames: int) -> list[int]:
        """The token ids a video pad becomes (Qwen3-VL: timestamps and per-frame brackets)."""
        pre = self.preprocessor
        t, gh, gw = (int(x) for x in grid)
        item = VisionItem("video", pre.sizes[0][0], (gh, gw), [None] * t, VIDEO_FPS, frames)
        return self.get_tokenizer().encode(pre.placeholder_text(item), add_special_tokens=False)


class TreeDummyInputs(BaseDummyInputsBuilder[TreeProcessingInfo]):
    def get_dummy_text(self, mm_counts) -> str:
        return IMAGE_PAD * mm_counts.get("image", 0) + VIDEO_PAD * mm_counts.get("video", 0)

    def get_dummy_mm_data(self, seq_len, mm_counts, mm_options):
        (height, width), _ = self.info.preprocessor.sizes[0]
        data = {"image": self._get_dummy_images(width=width, height=height,
                                                num_images=mm_counts.get("image", 0),
                                                overrides=mm_options.get("image"))}
        if mm_counts.get("video", 0):
            data["video"] = self._get_dummy_videos(width=width, height=height, num_frames=2,
                                                   num_videos=mm_counts["video"],
                                                   overrides=mm_options.get("video"))
        return data


class TreeProcessor(BaseMultiModalProcessor[TreeProcessingInfo]):
    def _call_hf_processor(self, hf_data, hf_kwargs) -> BatchFeature:
        pre, out = self.info.preprocessor, {}
        if images := [pre.image(image) for image in hf_data.get("images", [])]:
            out["pixel_values"] = torch.cat([item.slices[0] for item in images])
            out["image_grid_thw"] = torch.tensor([[1, *item.grid] for item in images])
        if videos := [pre.video(frames_of(v), VIDEO_FPS) for v in hf_data.get("videos", [])]:
            out["pixel_values_videos"] = torch.cat([s for item in videos for s in item.slices])
            out["video_grid_thw"] = torch.tensor([[len(v.slices), *v.grid] for v in videos])
            out["video_frames"] = torch.tensor([v.frames for v in videos])
        return BatchFeature(out)

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        fields = {}
        for modality, rows, grid in (("image", "pixel_values", "image_grid_thw"),
                                     ("video", "pixel_values_videos", "video_grid_thw")):
            sizes = hf_inputs.get(grid, torch.empty((0, 3), dtype=torch.long)).prod(-1)
            fields[rows] = MultiModalFieldConfig.flat_from_sizes(modality, sizes)
            fields[grid] = MultiModalFieldConfig.batched(modality, keep_on_cpu=True)
        fields["video_frames"] = MultiModalFieldConfig.batched("video", keep_on_cpu=True)
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        config, merge = self.info.get_hf_config(), self.info.preprocessor.merge**2

        def image(index: int) -> list[int]:
            grid = out_mm_kwargs["image"][index]["image_grid_thw"].data
            return [config.image_token_id] * (int(grid.prod()) // merge)

        def video(index: int) -> PromptUpdateDetails:
            item = out_mm_kwargs["video"][index]
            tokens = self.info.video_tokens(item["video_grid_thw"].data,
                                            int(item["video_frames"].data))
            return PromptUpdateDetails.select_token_id(tokens, config.video_token_id)

        return [PromptReplacement(modality="image", target=[config.image_token_id],
                                  replacement=image),
                PromptReplacement(modality="video", target=[config.video_token_id],
                                  replacement=video)]


@MULTIMODAL_REGISTRY.register_processor(TreeProcessor, info=TreeProcessingInfo,
                                        dummy_inputs=TreeDummyInputs)
class TyllmVlmForConditionalGeneration(nn.Module, SupportsMultiModal):
    """Declares a compiled VLM tree to vLLM; tyllm's EdgeX worker runs it."""

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return f"{VISION_START}{IMAGE_PAD}{VISION_END}"
        if modality.startswith("video"):
            return f"{VISION_START}{VIDEO_PAD}{VISION_END}"
        raise ValueError(f"tyllm serves images and videos, not {modality}.")

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


def frames_of(video) -> list[Image.Image]:
    """vLLM hands a video as frames [T, H, W, C] (uint8 array or tensor) or a list of frames."""
    if isinstance(video, torch.Tensor):
        video = video.numpy()
    return [f if isinstance(f, Image.Image) else Image.fromarray(np.asarray(f)) for f in video]


def register() -> None:
    """The `vllm.general_plugins` entry point: makes the architecture known to vLLM, and on
    tyllm's platform also stands it for the VLM architectures tyllm compiles, so an engine on a
    VLM checkpoint never imports vLLM's own Qwen-VL code (stock vLLM keeps it)."""
    from vllm import ModelRegistry
    from vllm.platforms import current_platform

    from tyllm.models.vlm.spec import supported_vlms
    from tyllm.vllm_ext.names import PLATFORM_QUALNAME

    ModelRegistry.register_model(ARCH, f"{__name__}:{ARCH}")
    platform = type(current_platform)
    if f"{platform.__module__}.{platform.__qualname__}" == PLATFORM_QUALNAME:
        for name in supported_vlms():
            ModelRegistry.register_model(name, f"{__name__}:{ARCH}")
