"""The model's HF image processor (PIL implementation: no torchvision needed) and the patch grid it
gives each compiled image size."""

from pathlib import Path

from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
    Qwen2VLImageProcessorPil,
    smart_resize,
)

from tyllm.artifacts.vlm_layout import PREPROCESSOR
from tyllm.errors import TyllmError


def image_processor(folder: Path, vision_config=None) -> Qwen2VLImageProcessorPil:
    """From the folder's preprocessor_config.json; without one, the HF defaults (pixel limits,
    mean, std) with the vision tower's patch, merge and temporal sizes."""
    if (folder / PREPROCESSOR).is_file():
        return Qwen2VLImageProcessorPil.from_pretrained(folder)
    v = vision_config
    return Qwen2VLImageProcessorPil(patch_size=v.patch_size, merge_size=v.spatial_merge_size,
                                    temporal_patch_size=v.temporal_patch_size)


def patch_grid(processor, size: tuple[int, int]) -> tuple[int, int]:
    """(grid_h, grid_w) in patches that the processor gives an image of `size` (height, width):
    the processor's own smart_resize rule (multiples of patch * merge within its pixel limits)."""
    patch = processor.patch_size
    try:
        h, w = smart_resize(size[0], size[1], factor=patch * processor.merge_size,
                            min_pixels=processor.size["shortest_edge"],
                            max_pixels=processor.size["longest_edge"])
    except ValueError as e:
        raise TyllmError(f"Image size {size[0]}x{size[1]} cannot be processed: {e} Use an "
                         f"image (or compiled size) with an aspect ratio below 200.") from e
    return h // patch, w // patch
