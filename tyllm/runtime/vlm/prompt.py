"""A user prompt plus N images / M videos -> the chat-templated text generate_multimodal takes."""

from pathlib import Path

from PIL import Image

from tyllm.errors import TyllmError
from tyllm.runtime.vlm.inputs import IMAGE_PAD, VIDEO_PAD, VISION_END, VISION_START
from tyllm.text import load_tokenizer


def multimodal_prompt(root: Path, prompt: str, images: int, videos: int, chat: bool = True) -> str:
    tokenizer = load_tokenizer(root)
    if chat and tokenizer.chat_template:
        content = ([{"type": "image"}] * images + [{"type": "video"}] * videos
                   + [{"type": "text", "text": prompt}])
        return tokenizer.apply_chat_template([{"role": "user", "content": content}],
                                             add_generation_prompt=True, tokenize=False)
    pads = [IMAGE_PAD] * images + [VIDEO_PAD] * videos
    return "".join(f"{VISION_START}{p}{VISION_END}" for p in pads) + prompt


def open_image(path: str) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as e:
        raise TyllmError(f"Cannot read image {path}: {e}. Give a PNG or JPEG file.") from e


def open_video(spec: str) -> list[Image.Image]:
    """A folder of frame images (sorted by name) or a comma-separated list of frame files."""
    folder = Path(spec)
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else \
        [Path(p) for p in spec.split(",") if p]
    if not files:
        raise TyllmError(f"Video {spec} has no frames: give a folder of frame images or "
                         f"comma-separated frame files.")
    return [open_image(str(p)) for p in files]
