"""The artifact tree behind a vLLM engine: loaded when it matches the engine, compiled if absent."""

from dataclasses import dataclass
from pathlib import Path

from tyllm.artifacts import layout
from tyllm.artifacts.documents import read_json
from tyllm.errors import TyllmError

CONFIG_KEY = "tyllm"


@dataclass(frozen=True)
class EngineTree:
    """What the engine asks of the tree: vLLM's model, TP size and max_model_len."""

    model_path: Path
    artifacts_path: Path
    dies: int
    max_kv: int
    seq_lens: tuple[int, ...]
    workers: str = "threads"


def engine_tree(vllm_config) -> EngineTree:
    options = (vllm_config.additional_config or {}).get(CONFIG_KEY)
    if not options or "artifacts_path" not in options:
        raise TyllmError('EdgeXExecutor needs additional_config={"tyllm": {"artifacts_path": '
                         '".../<N>die"}}: name the folder to load or compile the dies into.')
    return EngineTree(
        model_path=Path(vllm_config.model_config.model),
        artifacts_path=Path(options["artifacts_path"]),
        dies=vllm_config.parallel_config.tensor_parallel_size,
        max_kv=vllm_config.model_config.max_model_len,
        seq_lens=tuple(sorted(options.get("seq_len_list", (1, 8)))),
        workers=options.get("workers", "threads"))


def mismatches(want: EngineTree, config: dict) -> list[str]:
    pairs = (("dies", want.dies, config["dies"]),
             ("max_kv_cache_size", want.max_kv, config["max_kv_cache_size"]),
             ("seq_len_list", list(want.seq_lens), sorted(config["seq_len_list"])))
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
                         f"seq_len_list to the tree's values, or choose another artifacts_path.")
    return want.artifacts_path


def compile_tree(want: EngineTree) -> None:
    from tyllm.build_util import build_and_compile_llm

    build_and_compile_llm(want.model_path, want.artifacts_path, max_kv_cache_size=want.max_kv,
                          seq_len_list=want.seq_lens, dev_count=want.dies)
