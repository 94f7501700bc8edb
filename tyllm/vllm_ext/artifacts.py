"""The artifact tree behind a vLLM engine: loaded when it matches the engine, compiled if absent.

`additional_config={"tyllm": {...}}` names it: `artifacts_path` (default: a folder under the tyllm
cache keyed by the checkpoint and the engine's shape), `seq_len_list` (default [1, 8]),
`batch_sizes` (decode graphs for that many sequences per call; default `engine_batch_sizes` of
max_num_seqs), `kv_windows` (as build_and_compile_llm) and `workers` ("threads", "processes"
or "distributed": the dies as ranks of the torchrun job the engine runs in, on a compiled tree;
default "threads"). A VLM checkpoint takes the vision options of vlm_engine.py besides.
With speculative_config method "draft_model" the draft runs as a tree of its own
(`draft_tree`): `draft_artifacts_path` names it (default: a folder under the tyllm cache)."""


import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

from tyllm.artifacts import layout
from tyllm.artifacts.documents import read_json
from tyllm.cache import cache_root
from tyllm.compile.request import check_batch_sizes
from tyllm.errors import TyllmError
from tyllm.runtime.worker_kinds import DISTRIBUTED, RUN_WORKER_NAMES, THREADS
from tyllm.vllm_ext import vlm_engine
from tyllm.vllm_ext.names import logger_name
from tyllm.vllm_ext.tree_check import (
    Difference,
    EngineConfigError,
    asked,
    differences,
    engine_refusal,
)
from tyllm.vllm_ext.tree_model import TREE_KEY, is_tree, served_tree, tree_config
from tyllm.vllm_ext.vlm_engine import VISION_OPTIONS, VisionOptions, vision_options, vlm_seq_lens

CONFIG_KEY = "tyllm"
OPTIONS = ("artifacts_path", "seq_len_list", "batch_sizes", "workers", "kv_windows",
           "draft_artifacts_path", *VISION_OPTIONS)
BATCH_CAP = 16  # the largest batch compiled by default; more sequences take several calls
SPECULATION_METHODS = ("ngram", "draft_model")


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
    speculative_tokens: int = 0  # speculative_config's num_speculative_tokens: verify graphs
    draft: "EngineTree | None" = None  # speculative_config's draft model, a tree of its own


def tyllm_options(vllm_config) -> dict:
    options = dict((vllm_config.additional_config or {}).get(CONFIG_KEY) or {})
    if unknown := sorted(set(options) - set(OPTIONS)):
        raise TyllmError(f"Unknown tyllm option(s) {unknown} in additional_config: the options "
                         f"are {list(OPTIONS)}.")
    if "batch_sizes" in options:
        check_batch_sizes(options["batch_sizes"])
    if options.get("workers", "threads") not in RUN_WORKER_NAMES:
        raise TyllmError(f"additional_config tyllm.workers={options['workers']!r}: use one of "
                         f"{list(RUN_WORKER_NAMES)}.")
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
    spec = vllm_config.speculative_config
    speculative = spec.num_speculative_tokens if spec is not None else 0
    artifacts = options.get("artifacts_path") or served_tree(model_path) or \
        default_artifacts_path(model_path, dies, max_kv, seq_lens, batches, vision, speculative)
    workers = options.get("workers", "threads")
    return EngineTree(model_path, Path(artifacts), dies, max_kv, seq_lens, workers, batches,
                      named, windows, vision, speculative,
                      draft_tree(vllm_config, options, max_kv, seq_lens,
                                 THREADS if workers == DISTRIBUTED else workers))


def draft_tree(vllm_config, options: dict, max_kv: int, seq_lens, workers: str):
    """speculative_config method "draft_model": the draft's tree. A compiled tree (served
    through `draft_config`, or named by tyllm.draft_artifacts_path) runs as it was compiled,
    on its own die count; a draft checkpoint is compiled at draft_tensor_parallel_size dies
    (vLLM's default: the target's) for the target's context and prefill lengths."""
    spec = vllm_config.speculative_config
    if spec is None or spec.method != "draft_model":
        return None
    model_path = Path(spec.draft_model_config.model)
    path = served_tree(model_path) or options.get("draft_artifacts_path")
    if path and is_tree(Path(path)):
        config = tree_config(Path(path))
        return EngineTree(model_path, Path(path), config["dies"], config["max_kv_cache_size"],
                          tuple(config["seq_len_list"]), workers)
    dies = spec.draft_tensor_parallel_size
    path = path or default_artifacts_path(model_path, dies, max_kv, seq_lens)
    return EngineTree(model_path, Path(path), dies, max_kv, seq_lens, workers)


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
                           batches=(1,), vision: VisionOptions | None = None,
                           speculative_tokens: int = 0) -> Path:
    key = f"{checkpoint_fingerprint(model_path)}-kv{max_kv}-s{'_'.join(map(str, seq_lens))}"
    if tuple(batches) != (1,):
        key += f"-b{'_'.join(map(str, batches))}"
    if speculative_tokens:
        key += f"-k{speculative_tokens}"
    if vision:
        key += f"-v{vision.key()}"
    return cache_root() / "engines" / f"{model_path.name}-{key}" / f"{dies}die"


def tree_differences(want: EngineTree, config: dict) -> list[Difference]:
    """How the tree whose config.json is `config` differs from what the engine asks."""
    values = asked(want.dies, want.max_kv, want.seq_lens,
                   want.batch_sizes if want.named_batches else None)
    vision = vlm_engine.differences(want.vision, config) if want.vision else []
    verify = config.get("speculative_tokens", 0)
    fewer = ([Difference("speculative_tokens", want.speculative_tokens, verify)]
             if want.speculative_tokens > verify else [])  # more verify rows than asked serve
    return differences(values, config) + vision + fewer


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
        check_speculation(vllm_config)
        vlm = vlm_engine.is_vlm_checkpoint(Path(vllm_config.model_config.model))
        if vlm:
            name_vlm_tree(vllm_config)
        want = engine_tree(vllm_config)
        check_distributed(want, vlm)
        if not vlm and is_tree(want.artifacts_path):
            check_tree(take_tree_context(vllm_config, want))
        if want.draft is not None and is_tree(want.draft.artifacts_path):
            check_draft(want.draft, vllm_config.model_config.max_model_len)
    except TyllmError as error:
        raise EngineConfigError(str(error)) from None


def check_distributed(want: EngineTree, vlm: bool) -> None:
    """Distributed dies run a compiled text tree that every host holds a copy of: an engine
    cannot compile it on start (the other hosts' ranks wait for it)."""
    if want.workers != DISTRIBUTED:
        return
    if vlm or (is_tree(want.artifacts_path) and tree_config(want.artifacts_path)["kind"] == "vlm"):
        raise TyllmError("tyllm workers \"distributed\" runs text trees for now: serve a VLM with "
                         "workers \"processes\" on one host.")
    if not is_tree(want.artifacts_path):
        raise TyllmError(f"tyllm workers \"distributed\" serves a compiled tree, and "
                         f"{want.artifacts_path} holds none: compile it first (tyllm compile "
                         f"{want.model_path} {want.artifacts_path} --dies {want.dies} ...), "
                         f"copy it to every host, and serve the tree.")


def check_speculation(vllm_config) -> None:
    """tyllm's engine speculates with n-gram proposals or a draft model."""
    spec = vllm_config.speculative_config
    if spec is None:
        return
    if spec.method not in SPECULATION_METHODS:
        raise TyllmError(f"speculative_config method {spec.method!r} does not run on tyllm's "
                         f"dies: use \"ngram\" (prompt lookup) or \"draft_model\" (a smaller "
                         f"model of the same family, compiled as its own tree).")


def check_draft(draft: EngineTree, max_kv: int) -> None:
    """A compiled draft tree (draft_tree read its KV size) must hold the engine's whole context
    (its proposals follow every request to its last token)."""
    held = draft.max_kv
    if held < max_kv:
        raise TyllmError(f"The draft tree {draft.artifacts_path} holds {held} tokens of context, "
                         f"the engine {max_kv} (max_model_len): compile the draft with "
                         f"max_kv_cache_size={max_kv} (tyllm compile --max-kv {max_kv}), or "
                         f"serve with max_model_len={held}.")


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
            batch_size_list=want.batch_sizes, speculative_tokens=want.speculative_tokens)
        return
    build_and_compile_llm(want.model_path, want.artifacts_path, max_kv_cache_size=want.max_kv,
                          seq_len_list=want.seq_lens, dev_count=want.dies,
                          batch_size_list=want.batch_sizes, kv_windows=want.kv_windows,
                          speculative_tokens=want.speculative_tokens)
