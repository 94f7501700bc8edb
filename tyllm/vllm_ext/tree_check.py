"""A compiled tree against the engine asked to serve it, refused in the words the user typed.

A tree fixes its die count, KV size, graph lengths and batch sizes; an engine asking for others
cannot run it. The same comparison runs on three paths: `tyllm serve TREE` before vLLM starts
(its message names serve flags), vLLM's config check of every tyllm engine (platform.py; the
message names `LLM(...)` arguments) and the worker after an engine-start compile.
"""

from dataclasses import dataclass
from pathlib import Path


class EngineConfigError(Exception):
    """An engine option or tree that contradicts vLLM's engine config, raised while vLLM builds
    that config. Not a ValueError like TyllmError: vLLM builds its config in a pydantic
    validator, which wraps a ValueError in a ValidationError opening with pydantic's "1
    validation error for VllmConfig" and ending with the whole config."""


@dataclass(frozen=True)
class Setting:
    """One value a tree fixes, named as each surface names it."""

    engine: str  # an LLM(...) argument or an additional_config["tyllm"] key
    flag: str  # a `tyllm serve` flag
    compile_flag: str | None = None  # the `tyllm compile` flag that sets it


SETTINGS = {
    "dies": Setting("tensor_parallel_size", "--tensor-parallel-size", "--dies"),
    "max_kv_cache_size": Setting("max_model_len", "--max-model-len", "--max-kv"),
    "seq_len_list": Setting("tyllm.seq_len_list", "--seq-len-list", "--seq-lens"),
    "batch_sizes": Setting("tyllm.batch_sizes", "--batch-sizes", "--batch-sizes"),
    "image_sizes": Setting("tyllm.image_sizes", "--image-sizes"),
    "kind": Setting("kind", "kind"),  # a VLM checkpoint's engine on a language model's tree
    "speculative_tokens": Setting("speculative_config.num_speculative_tokens",
                                  "--speculative-config", "--speculative-tokens"),
}


@dataclass(frozen=True)
class Difference:
    name: str  # a tree config key, or a vision option
    asked: object
    tree: object

    def __str__(self) -> str:
        return f"{self.name} engine={self.asked} tree={self.tree}"

    @property
    def setting(self) -> Setting:
        return SETTINGS.get(self.name, Setting(f"tyllm.{self.name}", f"tyllm.{self.name}"))


def asked(dies: int, max_kv: int, seq_lens, batch_sizes=None) -> dict:
    """The values an engine asks of its tree; batch sizes only when the user named them (an
    existing tree is otherwise served with the batch sizes it has)."""
    values = {"dies": dies, "max_kv_cache_size": max_kv, "seq_len_list": sorted(seq_lens)}
    if batch_sizes is not None:
        values["batch_sizes"] = sorted({1, *batch_sizes})
    return values


def differences(values: dict, config: dict) -> list[Difference]:
    """How the tree whose config.json is `config` differs from what the engine asks."""
    have = {"dies": config["dies"], "max_kv_cache_size": config["max_kv_cache_size"],
            "seq_len_list": sorted(config["seq_len_list"]),
            "batch_sizes": sorted(config.get("batch_sizes", [1]))}
    return [Difference(name, value, have[name]) for name, value in values.items()
            if value != have[name]]


def engine_refusal(tree: Path, diffs: list[Difference]) -> str:
    """For an engine (LLM(...) arguments, additional_config options)."""
    def named(side: str) -> str:
        return ", ".join(f"{d.setting.engine}={getattr(d, side)!r}" for d in diffs)

    return (f"The tree at {tree} was compiled for {named('tree')}, not the {named('asked')} "
            f"this engine asks: pass the tree's values (tyllm.vllm_ext.tree_model."
            f"engine_kwargs(tree) gives them), or name another artifacts_path (an empty one is "
            f"compiled at engine start).")


def serve_refusal(tree: Path, diffs: list[Difference]) -> str:
    """For `tyllm serve TREE` (its flags)."""
    def flags(side: str) -> str:
        return " ".join(f"{d.setting.flag} {flag_value(getattr(d, side))}" for d in diffs)

    verb, these = ("contradicts", "the flag") if len(diffs) == 1 else ("contradict", "these flags")
    recompile = " ".join(f"{d.setting.compile_flag} {flag_value(d.asked)}" for d in diffs
                         if d.setting.compile_flag)
    hint = (f", or compile a tree with these values: tyllm compile MODEL OUT {recompile}"
            if recompile else "")
    return (f"{flags('asked')} {verb} the tree {tree}, compiled for {flags('tree')}: drop "
            f"{these} (a tree is served with the values it was compiled for){hint}.")


def flag_value(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
