"""The artifact tree behind a vLLM engine: loaded when it matches the engine, compiled if absent.

`additional_config={"tyllm": {...}}` names it: `artifacts_path` (default: a folder under the tyllm
cache keyed by the checkpoint and the engine's shape), `seq_len_list` (default [1, 8]),
`batch_sizes` (decode graphs for that many sequences per call; default `engine_batch_sizes` of
max_num_seqs), `kv_windows` (as build_and_compile_llm) and `workers` ("threads" or "processes",
default "threads"). A VLM checkpoint takes the vision options of vlm_engine.py besides."""


import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from tyllm.artifacts import layout
from tyllm.artifacts.documents import read_json
from tyllm.cache import cache_root
from tyllm.compile.request import check_batch_sizes
from tyllm.errors import TyllmError
from tyllm.runtime.worker_kinds import WORKER_NAMES
from tyllm.vllm_ext import vlm_engine
from tyllm.vllm_ext.names import logger_name
from tyllm.vllm_ext.tree_check import (
    Difference,
    EngineConfigError,
    asked,
    differences,
    engine_refusal,
)
from tyllm.vllm_ext.tree_model import TREE_KEY, is_tree, tree_config
from tyllm.vllm_ext.vlm_engine import VISION_OPTIONS, VisionOptions, vision_options, vlm_seq_lens

CONFIG_KEY = "tyllm"
OPTIONS = ("artifacts_path", "seq_len_list", "batch_sizes", "workers", "kv_windows",
           *VISION_OPTIONS)
BATCH_CAP = 16  # the largest batch compiled by default; more sequences take several calls


@dataclass(frozen=True)
class EngineTree:
    """What the engine asks of the tree: vLLM's model, TP size and max_model_len."""

    model_path: Path
    artifacts_path: Path
    dies: int
    max_kv: int
    seq_lens: tuple[int, ...]
    workers: str = "threads"
    batch_sizes: tuple[int, ...] = (1,)
    named_batches: bool = False  # batch_sizes came from the user, not from max_num_seqs
    kv_windows: tuple[int, ...] | None = None
    vision: VisionOptions | None = None  # a VLM checkpoint's tree


def tyllm_options(vllm_config) -> dict:
    options = dict((vllm_config.additional_config or {}).get(CONFIG_KEY) or {})
    if unknown := sorted(set(options) - set(OPTIONS)):
        raise TyllmError(f"Unknown tyllm option(s) {unknown} in additional_config: the options "
                         f"are {list(OPTIONS)}.")
    if "batch_sizes" in options:
        check_batch_sizes(options["batch_sizes"])
    if options.get("workers", "threads") not in WORKER_NAMES:
        raise TyllmError(f"additional_config tyllm.workers={options['workers']!r}: use one of "
                         f"{list(WORKER_NAMES)}.")
    return options


def engine_tree(vllm_config) -> EngineTree:
    options = tyllm_options(vllm_config)
    model_path = Path(vllm_config.model_config.model)
    dies = vllm_config.parallel_config.tensor_parallel_size
    max_kv = vllm_config.model_config.max_model_len
    vision = vision_options(model_path, options)
    seq_lens = vlm_seq_lens(options) if vision else tuple(
        sorted(options.get("seq_len_list", (1, 8))))
    named = "batch_sizes" in options
    batches = tuple(sorted({1, *options["batch_sizes"]}) if named else engine_batch_sizes(
        vllm_config.scheduler_config.max_num_seqs))
    windows = tuple(options["kv_windows"]) if options.get("kv_windows") else None
    artifacts = options.get("artifacts_path") or default_artifacts_path(
        model_path, dies, max_kv, seq_lens, batches, vision)
    return EngineTree(model_path, Path(artifacts), dies, max_kv, seq_lens,
                      options.get("workers", "threads"), batches, named, windows, vision)


def name_vlm_tree(vllm_config) -> None:
    """For an engine on a VLM checkpoint: finds or compiles its tree now, in the front end, and
    names it in the config, where the image processing (vlm_model.py) and the worker find it."""
    path = ensure_tree(engine_tree(vllm_config))
    setattr(vllm_config.model_config.hf_config, TREE_KEY, str(path.resolve()))
    extra = vllm_config.additional_config
    extra[CONFIG_KEY] = {**extra.get(CONFIG_KEY, {}), "artifacts_path": str(path)}


def engine_batch_sizes(max_num_seqs: int) -> tuple[int, ...]:
    """The batch sizes an engine-start compile builds: the powers of two below max_num_seqs,
    and max_num_seqs itself, up to BATCH_CAP (6 -> 1, 2, 4, 6; 256 -> 1, 2, 4, 8, 16)."""
    top = min(max_num_seqs, BATCH_CAP)
    return tuple(sorted({1, *(2**i for i in range(top.bit_length()) if 2**i < top), top}))


def checkpoint_fingerprint(model_path: Path) -> str:
    """Changes when the checkpoint's config or weight files change (name, size, mtime)."""
    if not model_path.is_dir():
        raise TyllmError(f"vLLM's model {str(model_path)!r} is not a local folder: tyllm compiles "
                         f"local HF checkpoints (config.json + safetensors).")
    files = sorted(p for p in model_path.iterdir()
                   if p.name == "config.json" or p.suffix == ".safetensors")
    facts = [(str(model_path.resolve()), *[(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                           for p in files])]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:16]


def default_artifacts_path(model_path: Path, dies: int, max_kv: int, seq_lens,
                           batches=(1,), vision: VisionOptions | None = None) -> Path:
    key = f"{checkpoint_fingerprint(model_path)}-kv{max_kv}-s{'_'.join(map(str, seq_lens))}"
    if tuple(batches) != (1,):
        key += f"-b{'_'.join(map(str, batches))}"
    if vision:
        key += f"-v{vision.key()}"
    return cache_root() / "engines" / f"{model_path.name}-{key}" / f"{dies}die"


def tree_differences(want: EngineTree, config: dict) -> list[Difference]:
    """How the tree whose config.json is `config` differs from what the engine asks."""
    values = asked(want.dies, want.max_kv, want.seq_lens,
                   want.batch_sizes if want.named_batches else None)
    vision = vlm_engine.differences(want.vision, config) if want.vision else []
    return differences(values, config) + vision


def mismatches(want: EngineTree, config: dict) -> list[str]:
    return [str(d) for d in tree_differences(want, config)]


def check_tree(want: EngineTree) -> None:
    """Refuses the tree at want's path when it was compiled for other values than asked."""
    bad = tree_differences(want, read_json(want.artifacts_path / layout.CONFIG, "config"))
    if bad:
        raise TyllmError(engine_refusal(want.artifacts_path, bad))


def ensure_tree(want: EngineTree) -> Path:
    """Returns the tree for `want`, compiling it first when the folder holds none."""
    if not (want.artifacts_path / layout.MANIFEST).is_file():
        compile_tree(want)
    check_tree(want)
    return want.artifacts_path


def check_engine_config(vllm_config) -> None:
    """While vLLM builds a tyllm engine's config: its tyllm options, and the tree they name when
    one is there, against the engine; a VLM checkpoint's tree is found or compiled now. Raised
    as EngineConfigError, whose message is the first line the user reads (tree_check.py)."""
    try:
        if vlm_engine.is_vlm_checkpoint(Path(vllm_config.model_config.model)):
            name_vlm_tree(vllm_config)
        elif is_tree((want := engine_tree(vllm_config)).artifacts_path):
            check_tree(take_tree_context(vllm_config, want))
    except TyllmError as error:
        raise EngineConfigError(str(error)) from None


def take_tree_context(vllm_config, want: EngineTree) -> EngineTree:
    """An engine on an existing tree with no max_model_len given serves the tree's KV size
    (vLLM's default, the checkpoint's whole context, is more than the tree's slots hold)."""
    from vllm.logger import init_logger

    model_config = vllm_config.model_config
    kv = tree_config(want.artifacts_path)["max_kv_cache_size"]
    if model_config.original_max_model_len is not None or kv == want.max_kv:
        return want
    logger = init_logger(logger_name(__name__))
    logger.info("tyllm: max_model_len=%d, the KV size of the tree at %s (no max_model_len was "
                "given).", kv, want.artifacts_path)
    model_config.max_model_len = kv
    return replace(want, max_kv=kv)


def compile_tree(want: EngineTree) -> None:
    from tyllm.build_util import build_and_compile_llm, build_and_compile_vlm

    if want.vision:
        v = want.vision
        build_and_compile_vlm(
            want.model_path, want.artifacts_path, num_die=want.dies, image_sizes=v.image_sizes,
            modalities=v.modalities, max_model_len=want.max_kv, vm_die_remap=v.vm_die_remap,
            prefill_lens=[m for m in want.seq_lens if m not in vlm_engine.FIXED_LENS],
            lm_die_remap=v.lm_die_remap, kv_windows=want.kv_windows,
            batch_size_list=want.batch_sizes)
        return
    build_and_compile_llm(want.model_path, want.artifacts_path, max_kv_cache_size=want.max_kv,
                          seq_len_list=want.seq_lens, dev_count=want.dies,
                          batch_size_list=want.batch_sizes, kv_windows=want.kv_windows)
