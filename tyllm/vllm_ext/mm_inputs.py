"""A request's multimodal features from vLLM's scheduler -> tyllm vision items (prompt order).

vLLM's front end ran tyllm's own processing (vlm_model.TreeProcessor): each feature holds one
image's pixel rows and its patch grid, already at a compiled size."""

from tyllm.errors import TyllmError
from tyllm.runtime.vlm.inputs import VisionItem
from tyllm.vllm_ext.vlm_model import VIDEO_FPS


def vision_items(session, features) -> list[VisionItem]:
    if not features:
        return []
    if not hasattr(session, "prepare"):
        raise TyllmError("This request carries images but the tree is text-only: serve a tree "
                         "compiled by scripts/compile_vlm.py.")
    sizes = {grid: size for size, grid in session.preprocessor.sizes}
    return [item_of(feature, sizes) for feature in features]


def item_of(feature, sizes: dict) -> VisionItem:
    if feature.data is None:
        raise TyllmError("A multimodal feature reached the worker without its data: keep "
                         "prefix caching off and the processor cache in memory (lru).")
    data = {name: elem.data for name, elem in feature.data.items()}
    if not {"pixel_values", "pixel_values_videos"} & set(data):
        raise TyllmError(f"A multimodal feature reached the worker as {sorted(data)}, not pixel "
                         f"rows: start the engine with mm_processor_cache_type='lru' (not shm).")
    if feature.modality == "image":
        _, gh, gw = (int(x) for x in data["image_grid_thw"])
        return VisionItem("image", sizes[(gh, gw)], (gh, gw), [data["pixel_values"]])
    if feature.modality == "video":
        t, gh, gw = (int(x) for x in data["video_grid_thw"])
        slices = list(data["pixel_values_videos"].split(gh * gw))
        if len(slices) != t:
            raise TyllmError(f"A video feature has {len(slices)} temporal slices, its grid {t}.")
        return VisionItem("video", sizes[(gh, gw)], (gh, gw), slices, VIDEO_FPS,
                          int(data["video_frames"]))
    raise TyllmError(f"tyllm's vLLM worker takes images and videos, not {feature.modality}.")
