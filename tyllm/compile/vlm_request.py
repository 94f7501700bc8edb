"""A VLM compile request (the flags of scripts/compile_vlm.py), validated before any work."""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tyllm.compile.request import Request, check_dies, check_distinct, validate_common
from tyllm.errors import TyllmError

MODALITIES = ("image", "video")


@dataclass(frozen=True)
class VlmCompileRequest(Request):
    """A VLM tree's request: the language model's dies and KV size are `num_die` and
    `max_model_len`; its graphs always take embeddings."""

    dies_field: ClassVar[str] = "num_die"
    max_kv_field: ClassVar[str] = "max_model_len"
    embedding_as_input: ClassVar[bool] = True

    num_die: int = 1
    image_sizes: tuple[tuple[int, int], ...] = ((448, 448),)  # (height, width), first = default
    modalities: tuple[str, ...] = ("image",)
    prefill_lens: tuple[int, ...] = ()
    max_model_len: int = 4096
    vm_die_remap: tuple[int, ...] | None = None  # physical die of each vision program
    lm_die_remap: tuple[int, ...] | None = None  # physical die of each language program
    source_tokenizer: Path | None = None

    @property
    def seq_len_list(self) -> tuple[int, ...]:
        return tuple(sorted({1, 8, *self.prefill_lens}))

    @property
    def vision_remap(self) -> tuple[int, ...]:
        return self.vm_die_remap or tuple(range(self.num_die))

    @property
    def language_remap(self) -> tuple[int, ...]:
        return self.lm_die_remap or tuple(range(self.num_die))


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """'540x960,720x1280' -> ((540, 960), (720, 1280)) (height x width)."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)x(\d+)", part)
        if not match:
            raise TyllmError(f"Image size {part!r} is not HEIGHTxWIDTH: write e.g. 540x960.")
        sizes.append((int(match[1]), int(match[2])))
    if not sizes:
        raise TyllmError("--image_sizes is empty: give e.g. 540x960,720x1280.")
    return tuple(sizes)


def check_remap(request: VlmCompileRequest, name: str, remap: tuple[int, ...],
                full: bool) -> None:
    option, dies = request.option(name), request.num_die
    if len(set(remap)) != len(remap) or any(not 0 <= d < dies for d in remap):
        raise TyllmError(f"{option} {list(remap)} must list distinct dies in 0..{dies - 1} "
                         f"({request.option('num_die')}={dies}).")
    if full and len(remap) != dies:
        raise TyllmError(f"{option} {list(remap)} must place all {dies} language programs: "
                         f"give a permutation of 0..{dies - 1}.")
    if not remap:
        raise TyllmError(f"{option} is empty: give at least one die.")


def check_inputs(request: VlmCompileRequest) -> None:
    """Modalities and image sizes: known and listed once."""
    o = request.option
    bad = [m for m in request.modalities if m not in MODALITIES]
    if bad or not request.modalities:
        raise TyllmError(f"{o('modalities')} {bad or '(none)'} is not supported: choose from "
                         f"{MODALITIES}.")
    check_distinct(request.modalities, o("modalities"), "list each modality once.")
    if any(h < 1 or w < 1 for h, w in request.image_sizes):
        raise TyllmError(f"{o('image_sizes')} {request.image_sizes} must be positive "
                         f"HEIGHTxWIDTH.")
    check_distinct(request.image_sizes, o("image_sizes"), "list each size once.")


def check_lengths(request: VlmCompileRequest) -> None:
    o = request.option
    if any(m < 1 for m in request.prefill_lens):
        raise TyllmError(f"{o('prefill_lens')} {list(request.prefill_lens)} must be positive.")
    check_distinct(request.prefill_lens, o("prefill_lens"),
                   "list each length once (1 and 8 are always compiled).")
    if max(request.seq_len_list) > request.max_model_len:
        raise TyllmError(f"prefill length {max(request.seq_len_list)} exceeds "
                         f"{o('max_model_len')}={request.max_model_len}: raise "
                         f"{o('max_model_len')} or shorten {o('prefill_lens')}.")


def validate(request: VlmCompileRequest) -> None:
    check_dies(request)
    check_remap(request, "vm_die_remap", request.vision_remap, full=False)
    check_remap(request, "lm_die_remap", request.language_remap, full=True)
    check_inputs(request)
    check_lengths(request)
    validate_common(request)
    if request.source_tokenizer is not None and not request.source_tokenizer.is_file():
        raise TyllmError(f"{request.option('source_tokenizer')} {request.source_tokenizer} is "
                         f"not a file: pass a tokenizer.json.")
