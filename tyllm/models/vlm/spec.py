"""What the compiler needs to know about one vision-language architecture."""

from dataclasses import dataclass, replace

from tyllm.models.dims import DecoderDims, dims_from_hf_config


@dataclass(frozen=True)
class VlmSpec:
    name: str
    hf_architectures: tuple[str, ...]
    hf_module: str  # transformers module holding the classes below
    vision_class: str  # HF vision tower class, built from config.vision_config
    rotary_class: str  # HF text rotary embedding (multimodal rope), built from text_config
    text_arch: str  # the registry entry (tyllm/models/registry.py) of its text layers
    qk_norm: bool  # Qwen3 text layers normalise queries and keys per head
    qkv_bias: bool  # Qwen2 text layers have q/k/v biases
    video_frames_as_images: bool  # Qwen3-VL: each frame pair is its own run with a timestamp

    def text_dims(self, config) -> DecoderDims:
        """transformers 5 keeps tie_word_embeddings on the outer config of a VLM."""
        dims = dims_from_hf_config(config.text_config, qkv_bias=self.qkv_bias, o_bias=False,
                                   mlp_bias=False, qk_norm=self.qk_norm)
        tied = bool(getattr(config, "tie_word_embeddings", False)) or dims.tie_word_embeddings
        return replace(dims, tie_word_embeddings=tied)

    def hf_class(self, name: str):
        import importlib

        return getattr(importlib.import_module(self.hf_module), name)


QWEN2_5_VL = VlmSpec(
    name="qwen2_5_vl", hf_architectures=("Qwen2_5_VLForConditionalGeneration",),
    hf_module="transformers.models.qwen2_5_vl.modeling_qwen2_5_vl",
    vision_class="Qwen2_5_VisionTransformerPretrainedModel",
    rotary_class="Qwen2_5_VLRotaryEmbedding", text_arch="qwen2", qk_norm=False, qkv_bias=True,
    video_frames_as_images=False)

QWEN3_VL = VlmSpec(
    name="qwen3_vl", hf_architectures=("Qwen3VLForConditionalGeneration",),
    hf_module="transformers.models.qwen3_vl.modeling_qwen3_vl",
    vision_class="Qwen3VLVisionModel", rotary_class="Qwen3VLTextRotaryEmbedding",
    text_arch="qwen3", qk_norm=True, qkv_bias=False, video_frames_as_images=True)

QWEN2_VL = VlmSpec(
    name="qwen2_vl", hf_architectures=("Qwen2VLForConditionalGeneration",),
    hf_module="transformers.models.qwen2_vl.modeling_qwen2_vl",
    vision_class="Qwen2VisionTransformerPretrainedModel",
    rotary_class="Qwen2VLRotaryEmbedding", text_arch="qwen2", qk_norm=False, qkv_bias=True,
    video_frames_as_images=False)

VLMS = {spec.name: spec for spec in (QWEN2_VL, QWEN2_5_VL, QWEN3_VL)}


def vlm_for_config(config) -> VlmSpec | None:
    names = list(getattr(config, "architectures", None) or [])
    return next((s for s in VLMS.values() if any(n in s.hf_architectures for n in names)), None)


def supported_vlms() -> list[str]:
    return sorted(a for spec in VLMS.values() for a in spec.hf_architectures)
