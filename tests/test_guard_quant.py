"""Quantization, conversion and evaluation inputs: a clear error for each bad one, and no file
tyllm did not write is ever overwritten."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from models import load_hf
from test_quant import SMALL, word_texts

from tyllm.errors import TyllmError
from tyllm.quant import get_awq_config, get_dataloader, quantize_model, save_quantized_model
from tyllm.quant.convert import convert_checkpoint
from tyllm.quant.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source(checkpoint_factory):
    return checkpoint_factory("qwen3", seed=3, **SMALL)


@pytest.fixture(scope="module")
def quantized(source):
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
    calib = get_dataloader(word_texts(4, 0), tokenizer, max_sequence_length=64)
    model = quantize_model(load_hf(source), get_awq_config(group_size=32, n_grid=3), calib,
                           tokenizer)
    return model, tokenizer


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_save_into_a_folder_of_user_files_is_refused(quantized, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"my": "settings"}')
    (folder / "notes.md").write_text("notes")
    before = snapshot(folder)
    with pytest.raises(TyllmError, match=r"was not written by tyllm"):
        save_quantized_model(quantized[0], folder, quantized[1])
    assert snapshot(folder) == before


def test_save_replaces_a_folder_it_wrote_but_not_one_the_user_added_to(quantized, tmp_path):
    out = save_quantized_model(quantized[0], tmp_path / "awq", quantized[1])
    save_quantized_model(quantized[0], out, quantized[1])  # its own folder: replaced
    assert json.loads((out / "config.json").read_text())["quantization_config"]["bits"] == 4
    (out / "README.md").write_text("my notes")
    with pytest.raises(TyllmError, match=r"will not overwrite files it did not write"):
        save_quantized_model(quantized[0], out, quantized[1])
    assert (out / "README.md").read_text() == "my notes"


def test_save_into_an_empty_folder_works(quantized, tmp_path):
    (tmp_path / "empty").mkdir()
    out = save_quantized_model(quantized[0], tmp_path / "empty", quantized[1])
    assert (out / "model.safetensors").is_file()


def convert(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "checkpoint_convert.py"),
                           *map(str, args)], capture_output=True, text=True)


def test_convert_source_that_is_a_file_is_named(tmp_path):
    (tmp_path / "src.json").write_text("{}")
    run = convert("--src", tmp_path / "src.json", "--dst", tmp_path / "out")
    assert run.returncode == 2 and "is a file: pass the checkpoint's folder" in run.stderr


def test_convert_source_with_invalid_json_is_named(quantized, tmp_path):
    src = save_quantized_model(quantized[0], tmp_path / "awq", quantized[1])
    (src / "config.json").write_text("{broken")
    run = convert("--src", src, "--dst", tmp_path / "out")
    assert run.returncode == 2 and "config.json is not valid JSON" in run.stderr
    assert "Traceback" not in run.stderr


def test_convert_destination_that_is_a_file_is_refused(quantized, tmp_path):
    src = save_quantized_model(quantized[0], tmp_path / "awq", quantized[1])
    (tmp_path / "out").write_text("mine")
    with pytest.raises(TyllmError, match=r"is an existing file"):
        convert_checkpoint(src, tmp_path / "out")
    assert (tmp_path / "out").read_text() == "mine"


def test_convert_truncated_shard_is_named(quantized, tmp_path):
    src = save_quantized_model(quantized[0], tmp_path / "awq", quantized[1])
    weights = src / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-500])
    with pytest.raises(TyllmError, match=r"model.safetensors is not a readable safetensors"):
        convert_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_eval_checks_every_folder_before_scoring(source, tmp_path, monkeypatch):
    import transformers

    def scoring_started(*args, **kwargs):
        raise AssertionError("evaluate loaded a model before checking its inputs")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", scoring_started)
    with pytest.raises(TyllmError, match=r"does not exist"):
        evaluate(source, tree=tmp_path / "no-tree")
    with pytest.raises(TyllmError, match=r"Model folder .* does not exist"):
        evaluate(tmp_path / "no-model")
    model = Path(shutil.copytree(source, tmp_path / "model"))
    (model / "config.json").write_text("[]")
    with pytest.raises(TyllmError, match=r"not an object"):
        evaluate(model)
