"""Reading a HF checkpoint folder: config, tokenizer and safetensors weights, slice by slice.

Only the files named by `model.safetensors.index.json` (or the single `model.safetensors`) are
opened, never every file in the folder: stray files there must not leak into a model.
"""

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig

from tyllm.errors import TyllmError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def load_config(model_path: Path):
    if not (model_path / "config.json").is_file():
        raise TyllmError(f"{model_path} has no config.json: pass the folder of a HF checkpoint "
                         f"(config.json, safetensors weights, tokenizer.json).")
    read_json_file(model_path / "config.json")
    try:
        return AutoConfig.from_pretrained(model_path, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise TyllmError(f"{model_path / 'config.json'} is not a config transformers can read "
                         f"({e}): restore the checkpoint's original config.json.") from e


def read_json_file(path: Path) -> dict:
    """A JSON object from a checkpoint file, or an error naming the file and the fix."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TyllmError(f"{path} is not valid JSON ({e}): restore the file from the original "
                         f"checkpoint.") from e
    if not isinstance(document, dict):
        raise TyllmError(f"{path} holds a JSON {type(document).__name__}, not an object: restore "
                         f"the file from the original checkpoint.")
    return document


@contextmanager
def open_safetensors(path: Path):
    """safe_open, with a damaged file named in one sentence instead of a parser traceback."""
    try:
        handle = safe_open(path, framework="pt")
    except (OSError, SafetensorError) as e:
        raise TyllmError(f"{path} is not a readable safetensors file ({e}): the file is "
                         f"truncated or damaged; copy it again from the original "
                         f"checkpoint.") from e
    with handle:
        yield handle


def shard_path(model_path: Path, file: str) -> Path:
    """A shard named by the index, refused unless its name is a plain path inside the checkpoint
    folder (the file itself may be a link, as in the HF hub cache's snapshot folders)."""
    path = model_path / file
    if not isinstance(file, str) or Path(file).is_absolute() or ".." in Path(file).parts:
        raise TyllmError(f"{model_path / INDEX_FILE} names {file!r}, outside the checkpoint "
                         f"folder: tyllm reads weights only from inside {model_path}; fix the "
                         f"index.")
    return path


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
        names = read_json_file(index).get("weight_map")
        if not isinstance(names, dict):
            raise TyllmError(f"{index} has no weight_map: restore the index from the original "
                             f"checkpoint.")
        return {name: shard_path(model_path, file) for name, file in names.items()}
    single = model_path / SINGLE_FILE
    if single.is_file():
        with open_safetensors(single) as f:
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
        with open_safetensors(path) as handle:
            tensor = handle.get_slice(name)
            view = tensor[slices] if slices is not None else tensor[:]
            # safetensors returns views of its file mapping: copy into owned, aligned memory.
            return view.clone(memory_format=torch.contiguous_format)
