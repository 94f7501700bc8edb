"""Reading a HF checkpoint folder: config, tokenizer and safetensors weights, slice by slice.

Only the files named by `model.safetensors.index.json` (or the single `model.safetensors`) are
opened, never every file in the folder: stray files there must not leak into a model.
"""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig

from tyllm.errors import TyllmError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def load_config(model_path: Path):
    if not (model_path / "config.json").is_file():
        raise TyllmError(f"{model_path} has no config.json: pass the folder of a HF checkpoint "
                         f"(config.json, safetensors weights, tokenizer.json).")
    return AutoConfig.from_pretrained(model_path, trust_remote_code=False)


def tokenizer_file(model_path: Path) -> Path:
    path = model_path / "tokenizer.json"
    if not path.is_file():
        raise TyllmError(f"{model_path} has no tokenizer.json: save the tokenizer next to the "
                         f"weights (tokenizer.save_pretrained(folder)).")
    return path


def weight_map(model_path: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file that holds it."""
    index = model_path / INDEX_FILE
    if index.is_file():
        names = json.loads(index.read_text())["weight_map"]
        return {name: model_path / file for name, file in names.items()}
    single = model_path / SINGLE_FILE
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            return dict.fromkeys(f.keys(), single)
    raise TyllmError(f"{model_path} has neither {INDEX_FILE} nor {SINGLE_FILE}: tyllm reads "
                     f"safetensors only; re-save the model with save_pretrained(folder).")


class TensorReader:
    """Reads named tensors, or slices of them, without loading whole files. Each read maps its
    file only while it copies the tensor out, so the pages of tensors already read do not stay
    resident (a compile holds one die's weights, not the checkpoint's mapped pages too). It holds
    no open file: one reader serves a whole compile."""

    def __init__(self, model_path: Path):
        self.model_path = model_path
        self.files = weight_map(model_path)

    def read(self, name: str, slices: tuple[slice, ...] | None = None) -> torch.Tensor:
        if name not in self.files:
            raise TyllmError(f"Weight {name!r} is missing from the checkpoint in "
                             f"{self.model_path}; the checkpoint does not match its config.")
        path = self.files[name]
        if not path.is_file():
            raise TyllmError(f"{path.name} is listed in {INDEX_FILE} but missing from "
                             f"{self.model_path}: copy the whole checkpoint.")
        with safe_open(path, framework="pt") as handle:
            tensor = handle.get_slice(name)
            view = tensor[slices] if slices is not None else tensor[:]
            # safetensors returns views of its file mapping: copy into owned, aligned memory.
            return view.clone(memory_format=torch.contiguous_format)
