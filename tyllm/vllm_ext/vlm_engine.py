"""An engine started on a VLM checkpoint: the vision options of its tree, and the tree made first.

`LLM(model=VLM_DIR, tensor_parallel_size=N, additional_config={"tyllm": {...}})` compiles the
same tree as scripts/compile_vlm.py, from the options `image_sizes` ("540x960,720x1280" or
[[540, 960], ...]; default 448x448), `modalities` (default ["image"]), `prefill_lens`,
`vm_die_remap` and `lm_die_remap`. vLLM's front end processes images with the tree's compiled
sizes (vlm_model.py), so the tree is made while the engine's config is checked, before any
processor exists, and the config then names it (`TREE_KEY`).
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tyllm.errors import TyllmError
from tyllm.vllm_ext.tree_check import Difference

VISION_OPTIONS = ("image_sizes", "modalities", "prefill_lens", "vm_die_remap", "lm_die_remap")
DEFAULT_IMAGE_SIZES = ((448, 448),)  # as scripts/compile_vlm.py
FIXED_LENS = (1, 8)  # a VLM tree always compiles these (tyllm/compile/vlm_request.py)


@dataclass(frozen=True)
class VisionOptions:
    image_sizes: tuple[tuple[int, int], ...] = DEFAULT_IMAGE_SIZES
    modalities: tuple[str, ...] = ("image",)
    vm_die_remap: tuple[int, ...] | None = None
    lm_die_remap: tuple[int, ...] | None = None
    named_sizes: bool = False  # image_sizes came from the user

    def key(self) -> str:
        """A short digest for the default tree folder: other sizes or remaps, other tree."""
        facts = [self.image_sizes, self.modalities, self.vm_die_remap, self.lm_die_remap]
        return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:8]


def is_vlm_checkpoint(model_path: Path) -> bool:
    """A raw HF folder of a supported VLM (a served tree's folder names tyllm's architecture)."""
    from tyllm.models.vlm.spec import supported_vlms

    config = model_path / "config.json"
    if not config.is_file():
        return False
    try:
        names = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return False
    return bool(set(names) & set(supported_vlms()))


def vision_options(model_path: Path, options: dict) -> VisionOptions | None:
    """The vision side of the tree an engine on `model_path` needs; None for a language model."""
    if not is_vlm_checkpoint(model_path):
        if named := [name for name in VISION_OPTIONS if name in options]:
            raise TyllmError(f"additional_config tyllm options {named} are for vision-language "
                             f"checkpoints; {model_path} is not one: remove them.")
        return None
    sizes = options.get("image_sizes")
    return VisionOptions(image_sizes=image_sizes(sizes) if sizes else DEFAULT_IMAGE_SIZES,
                         modalities=tuple(options.get("modalities") or ("image",)),
                         vm_die_remap=remap(options.get("vm_die_remap")),
                         lm_die_remap=remap(options.get("lm_die_remap")),
                         named_sizes=bool(sizes))


def vlm_seq_lens(options: dict) -> tuple[int, ...]:
    """A VLM tree's graph lengths: 1, 8 and the prefill lengths (seq_len_list counts as such)."""
    lens = [*options.get("prefill_lens", ()), *options.get("seq_len_list", ())]
    return tuple(sorted({*FIXED_LENS, *lens}))


def image_sizes(value) -> tuple[tuple[int, int], ...]:
    from tyllm.compile.vlm_request import parse_sizes

    if isinstance(value, str):
        return parse_sizes(value)
    if not isinstance(value, list | tuple) or not all(
            isinstance(s, str) or (isinstance(s, list | tuple) and len(s) == 2) for s in value):
        raise TyllmError(f"additional_config tyllm.image_sizes={value!r}: give (height, width) "
                         f"pairs, e.g. [[540, 960], [720, 1280]], or \"540x960,720x1280\".")
    return tuple(parse_sizes(s)[0] if isinstance(s, str) else (int(s[0]), int(s[1]))
                 for s in value)


def remap(value) -> tuple[int, ...] | None:
    return tuple(value) if value else None


def differences(vision: VisionOptions, config: dict) -> list[Difference]:
    """What a VLM tree found at the engine's path has other than the engine asks."""
    if "vision" not in config:
        return [Difference("kind", "vlm", "llm")]
    have = [tuple(s["size"]) for s in config["vision"]["sizes"]]
    pairs = [("modalities", sorted(vision.modalities), sorted(config["modalities"]))]
    if vision.named_sizes:
        pairs.append(("image_sizes", list(vision.image_sizes), have))
    return [Difference(name, a, b) for name, a, b in pairs if a != b]
