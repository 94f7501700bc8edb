"""A request's multimodal features from vLLM's scheduler -> tyllm vision items (prompt order).

vLLM's front end ran tyllm's own processing (vlm_model.TreeProcessor): each feature holds one
image's pixel rows and its patch grid, already at a compiled size."""

from tyllm.errors import TyllmError
from tyllm.vlm.inputs import VisionItem


def vision_items(session, features) -> list[VisionItem]:
    if not features:
        return []
    if not hasattr(session, "prepare"):
        raise TyllmError("This request carries images but the tree is text-only: serve a tree "
                         "compiled by scripts/compile_vlm.py.")
    sizes = {grid: size for size, grid in session.preprocessor.sizes}
    items = []
    for feature in features:
        if feature.modality != "image" or feature.data is None:
            raise TyllmError(f"tyllm's vLLM worker takes image features, got {feature.modality} "
                             f"({'no data' if feature.data is None else 'data'}).")
        rows = feature.data["pixel_values"].data
        _, gh, gw = (int(x) for x in feature.data["image_grid_thw"].data)
        items.append(VisionItem("image", sizes[(gh, gw)], (gh, gw), [rows]))
    return items
