"""Images and videos -> pixel rows per compiled vision graph, and the expanded prompt.

Mirrors the model's HF processor: each image is resized to a compiled size (exact sizes pass
unchanged, others go to the nearest compiled size with a logged note), then the HF image
processor (PIL implementation) rescales, normalises and patches it; every `<|image_pad|>` of the
prompt becomes one pad per merged patch. A video is a list of PIL frames, taken as given (no
frame sampling), paired along time (an odd count repeats the last frame, like HF); each pair is
one temporal slice through the same vision graph. Qwen2.5-VL spaces a video's temporal positions
by tokens_per_second * temporal_patch_size / fps; Qwen3-VL writes a `<t seconds>` timestamp
before each frame pair instead, as its processor does.
"""

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tyllm.errors import TyllmError
from tyllm.models.vlm.processor import patch_grid

log = logging.getLogger("tyllm.vlm")
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"


@dataclass
class VisionItem:
    modality: str  # "image" | "video"
    size: tuple[int, int]  # the compiled size used
    grid: tuple[int, int]  # patches (h, w) of one temporal slice
    slices: list[torch.Tensor] = field(default_factory=list)  # pixel rows, one per slice
    fps: float = 2.0
    frames: int = 1

    def llm_grid(self, merge: int) -> tuple[int, int]:
        return self.grid[0] // merge, self.grid[1] // merge


class Preprocessor:
    def __init__(self, processor, sizes: list[tuple[tuple[int, int], tuple[int, int]]],
                 merge: int, temporal: int, modalities: list[str], frames_as_images: bool,
                 tokens_per_second: float | None):
        self.processor, self.sizes, self.merge, self.temporal = processor, sizes, merge, temporal
        self.modalities, self.frames_as_images = modalities, frames_as_images
        self.tokens_per_second = tokens_per_second
        self.patch = processor.patch_size

    def _fit(self, image: Image.Image) -> tuple[Image.Image, tuple[int, int], tuple[int, int]]:
        """The image, the compiled size whose graph takes it, and its patch grid. An image whose
        own grid is a compiled one passes unchanged; others are resized to the nearest compiled
        size (closest aspect ratio, then area) with a logged note."""
        image = as_image(image)
        h, w = image.height, image.width
        own = patch_grid(self.processor, (h, w))
        for size, grid in self.sizes:
            if grid == own:
                return image, size, grid
        size, grid = min(self.sizes, key=lambda s: (abs(s[0][0] / s[0][1] - h / w),
                                                    abs(s[0][0] * s[0][1] - h * w)))
        log.warning("image of %dx%d resized to the compiled size %dx%d", h, w, *size)
        return image.resize((size[1], size[0]), Image.Resampling.BICUBIC), size, grid

    def _rows(self, image: Image.Image) -> torch.Tensor:
        out = self.processor(images=[image], return_tensors="pt")
        return out["pixel_values"].to(torch.float32)

    def image(self, image: Image.Image) -> VisionItem:
        self._check_modality("image")
        image, size, grid = self._fit(image)
        return VisionItem("image", size, grid, [self._rows(image)])

    def video(self, frames: list[Image.Image], fps: float) -> VisionItem:
        self._check_modality("video")
        if not frames:
            raise TyllmError("A video has no frames: give a list of PIL images.")
        fitted = [self._fit(f) for f in frames]
        if len({s for _, s, _ in fitted}) != 1:
            raise TyllmError("The frames of one video have different sizes: give frames of one "
                             "size.")
        _, size, grid = fitted[0]
        rows = [self._rows(f) for f, _, _ in fitted]
        rows += [rows[-1]] * (-len(rows) % self.temporal)
        item = VisionItem("video", size, grid, fps=fps, frames=len(frames))
        for i in range(0, len(rows), self.temporal):
            item.slices.append(self._pair(rows[i:i + self.temporal]))
        return item

    def _pair(self, frames: list[torch.Tensor]) -> torch.Tensor:
        """Rows of consecutive frames -> one slice whose temporal slot k comes from frame k."""
        n, width = frames[0].shape
        parts = [f.view(n, -1, self.temporal, self.patch * self.patch) for f in frames]  # C,T,PP
        out = parts[0].clone()
        for k, part in enumerate(parts):
            out[:, :, k] = part[:, :, k]
        return out.reshape(n, width)

    def _check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise TyllmError(f"This tree was compiled for {self.modalities}, not {modality}s: "
                             f"recompile with --modality {modality} (or both).")

    def tokens_per_slice(self, item: VisionItem) -> int:
        gh, gw = item.llm_grid(self.merge)
        return gh * gw

    def expand(self, prompt: str, images: list[VisionItem], videos: list[VisionItem]):
        """The prompt with every pad expanded, and the items in prompt order (features fill the
        pads in that order)."""
        found = re.findall(re.escape(IMAGE_PAD) + "|" + re.escape(VIDEO_PAD), prompt)
        wanted = {IMAGE_PAD: len(images), VIDEO_PAD: len(videos)}
        for pad, count in wanted.items():
            if found.count(pad) != count:
                raise TyllmError(f"The prompt holds {found.count(pad)} {pad} placeholders but "
                                 f"{count} {'images' if pad == IMAGE_PAD else 'videos'} were "
                                 f"given: put one {VISION_START}{pad}{VISION_END} per item.")
        queues = {IMAGE_PAD: iter(images), VIDEO_PAD: iter(videos)}
        ordered: list[VisionItem] = []

        def replace(match):
            ordered.append(next(queues[match.group(0)]))
            return self.placeholder_text(ordered[-1])

        expanded = re.sub(re.escape(IMAGE_PAD) + "|" + re.escape(VIDEO_PAD), replace, prompt)
        return expanded, ordered

    def placeholder_text(self, item: VisionItem) -> str:
        """What one image/video pad of the prompt becomes."""
        gh, gw = item.llm_grid(self.merge)
        n, t = gh * gw, len(item.slices)
        if item.modality == "image":
            return IMAGE_PAD * n
        if self.frames_as_images:
            stamps = timestamps(item.frames, item.fps, self.temporal)
            return "".join(f"<{s:.1f} seconds>{VISION_START}{VIDEO_PAD * n}{VISION_END}"
                           for s in stamps)
        return VIDEO_PAD * (n * t)

    def runs(self, item: VisionItem) -> list[tuple[int, int, int, float]]:
        """The item's runs of vision tokens: (llm grid t, h, w, temporal interval) each."""
        gh, gw = item.llm_grid(self.merge)
        t = len(item.slices)
        if item.modality == "image":
            return [(1, gh, gw, 1.0)]
        if self.frames_as_images:
            return [(1, gh, gw, 1.0)] * t
        if self.tokens_per_second is None:  # Qwen2-VL: one position per temporal slice
            return [(t, gh, gw, 1.0)]
        return [(t, gh, gw, float(self.tokens_per_second) * self.temporal / item.fps)]


def as_image(image) -> Image.Image:
    """A PIL image from a PIL image, an [H, W, 3] uint8 array or an image file path."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, str | Path):
        try:
            with Image.open(image) as opened:
                return opened.convert("RGB")
        except OSError as e:
            raise TyllmError(f"Cannot read image {image}: {e}. Give a PNG or JPEG file.") from e
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise TyllmError(f"An image must be a PIL image, a file path or an [H, W, 3] uint8 "
                         f"array, got {type(image).__name__} {getattr(array, 'shape', '')}.")
    return Image.fromarray(array)


def timestamps(frames: int, fps: float, temporal: int) -> list[float]:
    """Qwen3-VL: the mean time of each frame group (the last frame repeats to fill a group)."""
    index = list(range(frames)) + [frames - 1] * (-frames % temporal)
    times = [i / fps for i in index]
    return [(times[i] + times[i + temporal - 1]) / 2 for i in range(0, frames, temporal)]
