"""The finishing every tree shares (LLM and VLM): config.json's step keys, buffer_config.json,
tokenizer, embedding table, compile_report.json, and the staging folder moved into place."""

import json
import re
import shutil
from pathlib import Path

import torch

from tyllm.artifacts import layout
from tyllm.artifacts.documents import FORMAT_VERSION, plan_json, write_json
from tyllm.artifacts.manifest import TREE_FORMAT, write_manifest, written_by_tyllm
from tyllm.artifacts.params import save_params
from tyllm.artifacts.staging import write_atomically
from tyllm.compile.programs import CompileContext
from tyllm.compile.report import CompileReport
from tyllm.compile.steps import StepCheckpoint
from tyllm.errors import TyllmError


def step_config(ckpt: StepCheckpoint, ctx: CompileContext, plans) -> dict:
    """The config.json keys LLM and VLM trees share: the language model's step graphs."""
    dims, request = ckpt.dims, ctx.request
    return {
        "format_version": FORMAT_VERSION, "kind": ckpt.kind, "architecture": ckpt.architecture,
        "model_type": getattr(ckpt.config, "model_type", ckpt.architecture),
        "dies": len(plans), "seq_len_list": sorted(request.seq_len_list),
        "batch_sizes": request.batches, "max_kv_cache_size": request.max_kv,
        "speculative_tokens": request.speculative_tokens,
        "kv_windows": list(request.windows), "dtype": request.dtype,
        "embedding_as_input": request.embedding_as_input,
        "vocab_size": dims.vocab_size, "hidden_size": dims.hidden_size,
        "num_layers": dims.num_layers, "eos_token_ids": ckpt.eos,
        "die_plans": [plan_json(p) for p in plans],
        "backend": request.backend, "target": ctx.target.as_json(),
        "hf_config": ckpt.config.to_dict(),
        "quantization": ckpt.int4.as_json() if ckpt.int4 else None,
    }


def kv_cache_entries(graphs: list[dict]) -> list[dict]:
    first = {}
    for g in graphs:
        first.setdefault(g["die"], g)
    return [{"die": d, **{t["name"]: {"shape": t["shape"], "dtype": t["dtype"]}
                          for t in g["inputs"] if t["name"] in ("k_cache", "v_cache")}}
            for d, g in sorted(first.items())]


def copy_tokenizer(ckpt: StepCheckpoint, root: Path, extras: tuple[str, ...] = ()) -> None:
    """tokenizer.json (ckpt.tokenizer) plus the tokenizer/generation files the folder has."""
    shutil.copyfile(ckpt.tokenizer, root / layout.TOKENIZER)
    for name in (*layout.TOKENIZER_EXTRAS, *extras):
        if (ckpt.path / name).is_file():
            shutil.copyfile(ckpt.path / name, root / name)


def save_embedding(ckpt: StepCheckpoint, root: Path, dtype: torch.dtype,
                   name: str = "model.embed_tokens.weight") -> None:
    table = ckpt.reader.read(name).to(dtype)
    save_params(root / layout.EMBEDDING, {"embed_tokens": table})


def sizes_per_die(root: Path, dies: int) -> dict[int, int]:
    sizes = dict.fromkeys(range(dies), 0)
    for path in root.rglob("*"):
        match = re.search(r"die(\d+)(?!\d)", path.name)
        if match and path.is_file():
            sizes[int(match[1])] += path.stat().st_size
    return sizes


def write_documents(root: Path, config: dict, graphs: list[dict], **buffers) -> None:
    """config.json, buffer_config.json (the step graphs, their KV buffers and `buffers`, e.g. a
    VLM's mrope graphs) and empty.bin: what every tree (LLM, VLM) writes the same way."""
    write_json(root / layout.CONFIG, config)
    write_json(root / layout.BUFFER_CONFIG, {"format_version": FORMAT_VERSION, "graphs": graphs,
                                             "kv_cache": kv_cache_entries(graphs), **buffers})
    (root / layout.EMPTY).write_bytes(b"")


def write_report(ctx: CompileContext) -> None:
    """compile_report.json, once every other file is written (it counts their bytes)."""
    write_json(ctx.root / layout.REPORT,
               ctx.report.summary(sizes_per_die(ctx.root, ctx.request.dies)))


def final_line(tree: Path) -> str:
    summary = json.loads((tree / layout.REPORT).read_text())
    graphs = len(summary["graphs"])
    libraries = sum(len(g.get("windows") or [None]) for g in summary["graphs"])
    windows = f" ({libraries} KV-window libraries)" if libraries > graphs else ""
    processes = len({w["worker"] for w in summary.get("workers", [])})
    on = f" on {processes} processes" if processes > 1 else ""
    return (f"compiled {graphs} graphs{windows} into {tree} in "
            f"{summary['compile_seconds']} s{on}, peak RSS {summary['peak_rss_mb']} MB; "
            f"log: {tree / layout.COMPILE_LOG}")


def check_tree_destination(dest: Path) -> None:
    """Only a new or empty folder, or a tree tyllm wrote (its manifest tagged and listing exactly
    the files present), may be replaced."""
    if dest.is_dir() and any(dest.iterdir()) and not written_by_tyllm(dest, TREE_FORMAT):
        raise TyllmError(f"{dest} exists, is not empty and is not a tyllm artifact tree (no "
                         f"tyllm manifest listing exactly its files; a tree written by an older "
                         f"tyllm has none either): choose another artifacts_path or empty it "
                         f"yourself; tyllm will not overwrite it.")


def compile_into(dest: Path, report: CompileReport, build) -> Path:
    """`build(staging)` writes the tree's files with framework output going to its compile
    log, the manifest goes last (a tree without one is never taken as complete), and the
    staging folder replaces `dest`."""
    def write(staging: Path) -> None:
        with report.capture(staging / layout.COMPILE_LOG):
            build(staging)
        write_manifest(staging)

    tree = write_atomically(dest, write, check_tree_destination)
    report.say(final_line(tree))
    return tree
