"""Small randomly initialised Qwen2.5-VL / Qwen3-VL checkpoints of the real transformers classes,
saved as HF folders with a word-level tokenizer that knows the Qwen vision tokens and an image
processor config (`preprocessor_config.json`)."""

from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
WORDS = 200  # plain words w0..w199, then the vision tokens, then a few spare ids


def vl_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {f"w{i}": i for i in range(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in VISION_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0")


def token_ids() -> dict[str, int]:
    return {t: WORDS + i for i, t in enumerate(VISION_TOKENS)}


TEXT = dict(vocab_size=WORDS + 16, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
            initializer_range=0.05, tie_word_embeddings=False, rms_norm_eps=1e-6)


def qwen2_5_vl(folder: Path, seed: int = 0, vision_heads: int = 3, tied: bool = False) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = token_ids()
    text = TEXT | dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                        "mrope_section": [2, 3, 3]})
    vision = dict(depth=3, hidden_size=48, intermediate_size=72, num_heads=vision_heads,
                  out_hidden_size=TEXT["hidden_size"], patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1],
                  tokens_per_second=2, in_channels=3, hidden_act="silu")
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                              image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"],
                              vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"],
                              tie_word_embeddings=tied)  # real small Qwen-VLs tie, outer config
    return _save(folder, Qwen2_5_VLForConditionalGeneration, config, seed, patch=14)


def qwen3_vl(folder: Path, seed: int = 0, vision_heads: int = 3) -> Path:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    ids = token_ids()
    text = TEXT | dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                        "mrope_section": [2, 3, 3], "mrope_interleaved": True})
    vision = dict(depth=3, hidden_size=48, intermediate_size=72, num_heads=vision_heads,
                  out_hidden_size=TEXT["hidden_size"], patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, num_position_embeddings=36,
                  deepstack_visual_indexes=[0, 1],
                  in_channels=3, hidden_act="gelu_pytorch_tanh")
    config = Qwen3VLConfig(text_config=text, vision_config=vision,
                           image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"])
    return _save(folder, Qwen3VLForConditionalGeneration, config, seed, patch=16)


def _save(folder: Path, model_cls, config, seed: int, patch: int) -> Path:
    config.architectures = [model_cls.__name__]
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.save_pretrained(folder)
    vl_tokenizer().save_pretrained(folder)
    factor = patch * 2
    Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                             size={"shortest_edge": factor * factor,
                                   "longest_edge": 64 * factor * factor}).save_pretrained(folder)
    return folder


def qwen2_vl(folder: Path, seed: int = 0, vision_heads: int = 3) -> Path:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    ids = token_ids()
    text = TEXT | dict(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                        "mrope_section": [2, 3, 3]})
    vision = dict(depth=2, embed_dim=48, mlp_ratio=2, num_heads=vision_heads,
                  hidden_size=TEXT["hidden_size"], patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, in_channels=3, hidden_act="quick_gelu")
    config = Qwen2VLConfig(text_config=text, vision_config=vision,
                           image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"])
    return _save(folder, Qwen2VLForConditionalGeneration, config, seed, patch=14)


VLM_MAKERS = {"qwen2_vl": qwen2_vl, "qwen2_5_vl": qwen2_5_vl, "qwen3_vl": qwen3_vl,
              "qwen2_5_vl_tied": partial(qwen2_5_vl, tied=True)}
# one compiled size per model: on its patch grid (28 px for Qwen2.5-VL, 32 px for Qwen3-VL)
SIZES = {"qwen2_vl": (56, 84), "qwen2_5_vl": (56, 84), "qwen3_vl": (64, 96),
         "qwen2_5_vl_tied": (56, 84)}


def picture(size, seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(size[0], size[1], 3) * 255).astype("uint8"))
