"""The artifact tree behind a vLLM engine: loaded when it matches the engine, compiled if absent.

`additional_config={"tyllm": {...}}` names it: `artifacts_path` (default: a folder under the tyllm
cache keyed by the checkpoint and the engine's shape), `seq_len_list` (default [1, 8]),
`batch_sizes` (decode graphs for that many sequences per call; default `engine_batch_sizes` of
max_num_seqs) and `workers` ("threads" or "processes", default "threads")."""


import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tyllm.artifacts import layout
from tyllm.artifacts.documents import read_json
from tyllm.cache import cache_root
from tyllm.errors import TyllmError
from tyllm.request import check_batch_sizes
from tyllm.worker_kinds import WORKER_NAMES

CONFIG_KEY = "tyllm"
OPTIONS = ("artifacts_path", "seq_len_list", "batch_sizes", "workers")
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
    seq_lens = tuple(sorted(options.get("seq_len_list", (1, 8))))
    named = "batch_sizes" in options
    batches = tuple(sorted({1, *options["batch_sizes"]}) if named else engine_batch_sizes(
        vllm_config.scheduler_config.max_num_seqs))
    artifacts = options.get("artifacts_path") or default_artifacts_path(model_path, dies, max_kv,
                                                                        seq_lens, batches)
    return EngineTree(model_path, Path(artifacts), dies, max_kv, seq_lens,
                      options.get("workers", "threads"), batches, named)


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
                           batches=(1,)) -> Path:
    key = f"{checkpoint_fingerprint(model_path)}-kv{max_kv}-s{'_'.join(map(str, seq_lens))}"
    if tuple(batches) != (1,):
        key += f"-b{'_'.join(map(str, batches))}"
    return cache_root() / "engines" / f"{model_path.name}-{key}" / f"{dies}die"


def mismatches(want: EngineTree, config: dict) -> list[str]:
    pairs = [("dies", want.dies, config["dies"]),
             ("max_kv_cache_size", want.max_kv, config["max_kv_cache_size"]),
             ("seq_len_list", list(want.seq_lens), sorted(config["seq_len_list"]))]
    if want.named_batches:  # an existing tree is otherwise served with the batches it has
        pairs.append(("batch_sizes", list(want.batch_sizes), config.get("batch_sizes", [1])))
    return [f"{name} engine={a} tree={b}" for name, a, b in pairs if a != b]


def ensure_tree(want: EngineTree) -> Path:
    """Returns the tree for `want`, compiling it first when the folder holds none."""
    config_path = want.artifacts_path / layout.CONFIG
    if not (want.artifacts_path / layout.MANIFEST).is_file():
        compile_tree(want)
    bad = mismatches(want, read_json(config_path, "config"))
    if bad:
        raise TyllmError(f"The tree at {want.artifacts_path} does not match this engine "
                         f"({'; '.join(bad)}): set tensor_parallel_size, max_model_len and "
                         f"seq_len_list (and batch_sizes) to the tree's values, or choose "
                         f"another artifacts_path.")
    return want.artifacts_path


def compile_tree(want: EngineTree) -> None:
    from tyllm.build_util import build_and_compile_llm

    build_and_compile_llm(want.model_path, want.artifacts_path, max_kv_cache_size=want.max_kv,
                          seq_len_list=want.seq_lens, dev_count=want.dies,
                          batch_size_list=want.batch_sizes)
