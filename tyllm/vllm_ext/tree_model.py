"""Serving a compiled tree by itself: the HF model folder vLLM's front end reads, made from it.

A tree carries the checkpoint's HF config (inside its config.json) and tokenizer files, but not
as vLLM wants them: this writes `config.json` + tokenizer files into a small folder under the
tyllm cache (the tree stays read-only) and vLLM's model points there. The weights stay in the
tree; vLLM never loads any.
"""

import hashlib
import json
import shutil
from pathlib import Path

from tyllm.artifacts import layout
from tyllm.artifacts.documents import read_json
from tyllm.artifacts.manifest import verify_files
from tyllm.artifacts.staging import write_atomically
from tyllm.cache import cache_root
from tyllm.runtime.tree import Tree

VLM_ARCH = "TyllmVlmForConditionalGeneration"  # registered by vlm_model.py (general plugin)
TREE_KEY = "tyllm_tree"  # a served config.json names its tree
SERVED_FORMAT = b"3"  # bump when what model_folder writes changes: old cached folders go stale


def is_tree(path: Path) -> bool:
    return (path / layout.MANIFEST).is_file() and (path / layout.CONFIG).is_file()


def tree_config(tree: Path) -> dict:
    return read_json(tree / layout.CONFIG, "config")


def served_tree(model_path: Path) -> str | None:
    """The tree a served folder (model_folder) stands for; None for any other folder."""
    try:
        config = json.loads((Path(model_path) / layout.CONFIG).read_text())
    except (OSError, ValueError):
        return None
    tree = config.get(TREE_KEY) if isinstance(config, dict) else None
    return tree if isinstance(tree, str) and is_tree(Path(tree)) else None


def model_folder(tree: Path) -> Path:
    """A HF folder (config.json + tokenizer) for vLLM's front end, keyed by the tree's manifest."""
    manifest = (tree / layout.MANIFEST).read_bytes()
    key = hashlib.sha256(SERVED_FORMAT + str(tree.resolve()).encode() + manifest).hexdigest()[:16]
    folder = cache_root() / "served" / f"{tree.resolve().parent.name}-{tree.name}-{key}"
    if (folder / layout.CONFIG).is_file():
        return folder
    return write_atomically(folder, lambda staging: write_model_folder(tree, staging),
                            lambda _: None)


def write_model_folder(tree: Path, out: Path) -> None:
    config = tree_config(tree)
    # The dies dequantize int4 weights themselves: vLLM must not look for a quantization method.
    hf_config = {k: v for k, v in config["hf_config"].items() if k != "quantization_config"}
    hf_config[TREE_KEY] = str(tree.resolve())
    if config["kind"] == "vlm":  # vLLM sees tyllm's multimodal architecture (vlm_model.py)
        hf_config["architectures"] = [VLM_ARCH]
    (out / layout.CONFIG).write_text(json.dumps(hf_config, indent=2))
    checked = Tree(tree)  # the side files copied are the tree's own, listed and unedited
    present = [name for name in layout.SIDE_FILES if name in checked.manifest["files"]]
    verify_files(checked.root, checked.manifest, present)
    for name in present:
        shutil.copyfile(checked.file(name), out / name)


def engine_kwargs(tree: Path, workers: str = "threads") -> dict:
    """`LLM(**engine_kwargs(tree), ...)`: the engine arguments that serve `tree` as compiled."""
    tree = Path(tree)
    config = tree_config(tree)
    options = {"artifacts_path": str(tree), "seq_len_list": config["seq_len_list"],
               "workers": workers}
    return {"model": str(model_folder(tree)), "tensor_parallel_size": config["dies"],
            "max_model_len": config["max_kv_cache_size"],
            "additional_config": {"tyllm": options}}


def draft_config(draft_tree: Path, speculative_tokens: int) -> dict:
    """`LLM(..., speculative_config=draft_config(DRAFT_TREE, K))`: a compiled tree as the draft
    model of speculative decoding (vLLM reads its served folder; the dies run the tree)."""
    return {"method": "draft_model", "model": str(model_folder(Path(draft_tree))),
            "num_speculative_tokens": speculative_tokens}
