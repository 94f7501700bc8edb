"""Bad input gets a clear error naming the fix, before any work and without losing anything."""

import shutil

import pytest

from tyllm.build_util import build_and_compile_llm
from tyllm.checkpoint import TensorReader
from tyllm.errors import TyllmError


def compile_(ckpt, out, **kwargs):
    args = dict(max_kv_cache_size=32, seq_len_list=[1, 4], dev_count=1, progress=False) | kwargs
    return build_and_compile_llm(ckpt, out, **args)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(seq_len_list=[]), "seq_len_list is empty"),
    (dict(seq_len_list=[1, 4, 4]), "has duplicates"),
    (dict(seq_len_list=[1, 64]), "exceeds max_kv_cache_size=32"),
    (dict(seq_len_list=[0, 4]), "positive integers"),
    (dict(dev_count=0), "use 1 or more dies"),
    (dict(dev_count=7), "Cannot split 6 attention heads across 7 dies"),
    (dict(dtype="int8"), "choose one of"),
])
def test_bad_requests_are_refused_before_any_work(kwargs, message, checkpoint_factory, tmp_path):
    with pytest.raises(TyllmError, match=message):
        compile_(checkpoint_factory("qwen3"), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_unknown_architecture_lists_the_supported_ones(checkpoint_factory, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint_factory("llama"), ckpt)
    text = (ckpt / "config.json").read_text().replace("LlamaForCausalLM", "FalconForCausalLM")
    (ckpt / "config.json").write_text(text)
    with pytest.raises(TyllmError, match=r"Unsupported architecture.*LlamaForCausalLM.*Qwen3"):
        compile_(ckpt, tmp_path / "out")


@pytest.mark.parametrize(("missing", "message"), [
    ("config.json", "has no config.json"),
    ("model.safetensors", "neither model.safetensors.index.json nor model.safetensors"),
    ("tokenizer.json", "has no tokenizer.json"),
])
def test_missing_checkpoint_parts_are_named(missing, message, checkpoint_factory, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint_factory("qwen2"), ckpt)
    (ckpt / missing).unlink()
    with pytest.raises(TyllmError, match=message):
        compile_(ckpt, tmp_path / "out")


def test_a_non_tree_folder_is_never_overwritten(checkpoint_factory, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TyllmError, match="will not overwrite"):
        compile_(checkpoint_factory("qwen3"), out)
    assert (out / "notes.txt").read_text() == "mine"


def test_only_files_named_by_the_index_are_read(checkpoint_factory, tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint_factory("llama"), ckpt)
    tensors = load_file(ckpt / "model.safetensors")
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00001.safetensors")
    index = {"weight_map": dict.fromkeys(tensors, "model-00001-of-00001.safetensors")}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    save_file({k: v * 0 for k, v in tensors.items()}, ckpt / "delta-stray.safetensors")
    (ckpt / "delta-1.bin").write_bytes(b"garbage")
    reader = TensorReader(ckpt)
    assert {p.name for p in reader.files.values()} == {"model-00001-of-00001.safetensors"}
    name = "model.layers.0.mlp.up_proj.weight"
    assert reader.read(name).abs().sum() > 0
