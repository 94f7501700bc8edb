"""`tyllm eval`: one perplexity table for the float model, round-to-nearest int4, AWQ and a tree
compiled from the AWQ weights (run on the emulated dies)."""

import copy
import json

import pytest
import torch
from models import load_hf
from test_quant import SMALL, word_texts

from tyllm.build_util import build_and_compile_llm
from tyllm.cli import main
from tyllm.quant import (
    get_awq_config,
    get_dataloader,
    quantize_model,
    save_quantized_model,
)
from tyllm.quant.convert import convert_checkpoint
from tyllm.quant.evaluate import round_to_nearest

pytestmark = pytest.mark.slow


def test_eval_table(checkpoint_factory, tmp_path):
    from transformers import AutoTokenizer

    source = checkpoint_factory("qwen3", seed=5, **SMALL)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = load_hf(source)
    with torch.no_grad():  # a few loud channels, as trained LLMs have (see test_quant.py)
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[:4] *= 30
    model.save_pretrained(tmp_path / "float")
    tokenizer.save_pretrained(tmp_path / "float")
    calib = get_dataloader(word_texts(8, 0), tokenizer, max_sequence_length=128)
    awq = save_quantized_model(quantize_model(copy.deepcopy(model), get_awq_config(group_size=32),
                                              calib, tokenizer), tmp_path / "awq", tokenizer)
    converted = convert_checkpoint(awq, tmp_path / "awq-int4")  # the tree keeps int4 weights
    tree = build_and_compile_llm(converted, tmp_path / "tree" / "1die",
                                 max_kv_cache_size=64, seq_len_list=[1, 8], export_onnx=False,
                                 progress=False)
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("\n".join(word_texts(4, 1)))
    out = tmp_path / "scores.json"
    assert main(["eval", str(tmp_path / "float"), "--awq", str(awq), "--tree", tree,
                 "--text", str(held_out), "--blocks", "2", "--block-len", "48",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    scores = {s["name"].split(" ")[0]: s["perplexity"] for s in rows}
    assert list(scores) == ["float32", "round-to-nearest", "AWQ", "compiled"]
    assert abs(scores["AWQ"] - scores["float32"]) < abs(scores["round-to-nearest"]
                                                        - scores["float32"])
    assert abs(scores["compiled"] / scores["AWQ"] - 1) < 0.005
    assert all(r["probes"] == 2 * 2 for r in rows)
    accuracy = {s["name"].split(" ")[0]: s["next_token_accuracy"] for s in rows}
    assert abs(accuracy["compiled"] - accuracy["AWQ"]) <= 1 / 4  # the same model: one probe at most


def test_round_to_nearest_refuses_a_group_size_that_does_not_divide(checkpoint_factory):
    from tyllm.errors import TyllmError

    model = load_hf(checkpoint_factory("qwen3", seed=5, **SMALL))
    with pytest.raises(TyllmError, match="group"):
        round_to_nearest(model, 48)
