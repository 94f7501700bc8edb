"""HF transformers' greedy generate for image / video prompts, built the way the model's processor
would build its inputs (written here independently of tyllm: the HF processor classes need
torchvision, which this stack does not install)."""

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"


def normalized_frame(processor, image) -> np.ndarray:
    """[C, H, W] float32: rescaled and normalised (the frame must already be on the patch grid)."""
    x = np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.array(processor.image_mean, dtype=np.float32)[:, None, None]
    std = np.array(processor.image_std, dtype=np.float32)[:, None, None]
    return (x - mean) / std


def video_patches(processor, frames) -> tuple[torch.Tensor, list[int]]:
    """transformers' video patchify (video_processing_qwen3_vl.patchify) on [T, C, H, W]."""
    video = np.stack([normalized_frame(processor, f) for f in frames])
    if pad := -len(video) % processor.temporal_patch_size:
        video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
    t, c, h, w = video.shape
    p, m, tp = processor.patch_size, processor.merge_size, processor.temporal_patch_size
    gt, gh, gw = t // tp, h // p, w // p
    x = video.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(gt * gh * gw, c * tp * p * p)
    return torch.from_numpy(np.ascontiguousarray(x)), [gt, gh, gw]


def hf_generate(folder: Path, prompt: str, images=(), videos=(), max_new_tokens: int = 8,
                fps: float = 2.0) -> list[int]:
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    processor = Qwen2VLImageProcessorPil.from_pretrained(folder)
    kwargs, merge = {}, processor.merge_size**2
    if images:
        px = processor(images=list(images), return_tensors="pt")
        kwargs |= {"pixel_values": px["pixel_values"], "image_grid_thw": px["image_grid_thw"]}
        for grid in px["image_grid_thw"]:
            prompt = prompt.replace(IMAGE_PAD, "<|placeholder|>" * (int(grid.prod()) // merge), 1)
        prompt = prompt.replace("<|placeholder|>", IMAGE_PAD)
    if videos:
        pieces, grids = [], []
        for frames in videos:
            rows, grid = video_patches(processor, frames)
            pieces.append(rows)
            grids.append(grid)
            prompt = prompt.replace(VIDEO_PAD, video_text(model, grid, len(frames), fps, merge), 1)
        prompt = prompt.replace("<|placeholder|>", VIDEO_PAD)
        kwargs |= {"pixel_values_videos": torch.cat(pieces), "video_grid_thw": torch.tensor(grids)}
        if "qwen2_5" in model.config.model_type:
            kwargs["second_per_grid_ts"] = torch.tensor([2 / fps] * len(videos))
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    config = model.config
    types = (ids == config.image_token_id).int() + 2 * (ids == config.video_token_id).int()
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                         mm_token_type_ids=types, max_new_tokens=max_new_tokens,
                         do_sample=False, **kwargs)
    return out[0, ids.shape[1]:].tolist()


def video_text(model, grid, frames: int, fps: float, merge: int) -> str:
    per_frame = grid[1] * grid[2] // merge
    if model.config.model_type != "qwen3_vl":
        return "<|placeholder|>" * (per_frame * grid[0])
    stamps = Qwen3VLProcessor._calculate_timestamps(None, list(range(frames)), fps, 2)
    return "".join(f"<{s:.1f} seconds><|vision_start|>{'<|placeholder|>' * per_frame}"
                   f"<|vision_end|>" for s in stamps)
