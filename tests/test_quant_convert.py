"""checkpoint_convert and int4 trees: AutoAWQ / compressed-tensors -> tyllm's int4 layout and
back, compiled int4 trees against the dequantized model in HF, and the bad-input errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from models import greedy, load_hf
from safetensors.torch import load_file, save_file
from test_quant import SMALL, word_texts

from tyllm.build_util import build_and_compile_llm
from tyllm.errors import TyllmError
from tyllm.quant import (
    get_awq_config,
    get_dataloader,
    load_quantized_model,
    quantize_model,
    save_quantized_model,
)
from tyllm.quant.convert import convert_checkpoint
from tyllm.quant.groups import quantize
from tyllm.quant.int4 import dequantize_int4, pack_group_halves, unpack_group_halves

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [[5, 17, 3, 99, 42, 7], [200, 13, 8, 1, 64, 128, 2, 9, 77, 31, 250]]


def awq_checkpoint(source: Path, out: Path, group_size: int = 32) -> Path:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(source)  # the word-level test tokenizer
    calib = get_dataloader(word_texts(4, 0), tokenizer, max_sequence_length=96)
    quantized = quantize_model(load_hf(source), get_awq_config(group_size=group_size, n_grid=5),
                               calib, tokenizer)
    return save_quantized_model(quantized, out, tokenizer)


@pytest.fixture(scope="module")
def awq_qwen2(checkpoint_factory, tmp_path_factory):
    """An AWQ Qwen2 (q/k/v biases: they must survive quantization and conversion)."""
    source = checkpoint_factory("qwen2", seed=3, **SMALL)
    return awq_checkpoint(source, tmp_path_factory.mktemp("awq") / "qwen2-awq")


def test_group_halves_layout_round_trips():
    q = torch.randint(0, 16, (6, 64), dtype=torch.int32)
    packed = pack_group_halves(q, 32)
    assert packed.dtype == torch.uint8 and packed.shape == (6, 32)
    assert int(packed[2, 0]) == int(q[2, 0]) | int(q[2, 16]) << 4  # j low, j + G/2 high
    assert int(packed[2, 16]) == int(q[2, 32]) | int(q[2, 48]) << 4
    assert torch.equal(unpack_group_halves(packed, 32).to(torch.int32), q)


def test_awq_to_tyllm_and_back_is_lossless(awq_qwen2, tmp_path):
    converted = convert_checkpoint(awq_qwen2, tmp_path / "tyllm")
    config = json.loads((converted / "config.json").read_text())["quantization_config"]
    assert config == {"quant_method": "tyllm_int4", "bits": 4, "group_size": 32,
                      "zero_point": True, "source": "AutoAWQ GEMM"}
    tensors = load_file(converted / "model.safetensors")
    qkv_bias = "model.layers.0.self_attn.q_proj.bias"
    assert tensors["model.layers.0.mlp.down_proj.qweight"].shape == (128, 128)  # [out, in/2]
    assert qkv_bias in tensors and (converted / "tokenizer.json").is_file()
    back = convert_checkpoint(converted, tmp_path / "awq-again")
    original = load_file(awq_qwen2 / "model.safetensors")
    again = load_file(back / "model.safetensors")
    assert original.keys() == again.keys()
    assert all(torch.equal(original[k], again[k]) for k in original)
    back_config = json.loads((back / "config.json").read_text())["quantization_config"]
    assert back_config["quant_method"] == "awq" and back_config["version"] == "gemm"


def test_sharded_awq_checkpoint_keeps_its_shards(awq_qwen2, tmp_path):
    tensors = load_file(awq_qwen2 / "model.safetensors")
    src = tmp_path / "sharded"
    src.mkdir()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(src / file))
    weight_map = {n: f for f, part in halves.items() for n in part}
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    for name in ("config.json", "tokenizer.json"):
        (src / name).write_bytes((awq_qwen2 / name).read_bytes())
    out = convert_checkpoint(src, tmp_path / "converted")
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert set(index.values()) <= set(halves)
    expected = load_file(convert_checkpoint(awq_qwen2, tmp_path / "single") / "model.safetensors")
    got = {}
    for file in set(index.values()):
        got |= load_file(out / file)
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def compressed_tensors_checkpoint(source: Path, out: Path, group_size: int, symmetric: bool):
    """A pack-quantized W4A16 checkpoint written with the compressed-tensors library."""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    args = QuantizationArgs(num_bits=4, type="int", symmetric=symmetric, strategy="group",
                            group_size=group_size)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    state = load_file(source / "model.safetensors")
    model_state = {}
    for name, w in state.items():
        if ".layers." not in name or not name.endswith("_proj.weight"):
            model_state[name] = w
            continue
        module = name.removesuffix(".weight")
        _, scales, zeros = quantize(w, group_size, 4)
        params = {"weight": w, "weight_scale": scales.to(torch.float16)}
        if symmetric:
            params["weight_scale"] = (w.reshape(w.shape[0], -1, group_size).abs().amax(-1)
                                      / 7.5).to(torch.float16)
        else:
            params["weight_zero_point"] = (zeros - 8).to(torch.int8)
        for key, t in PackedQuantizationCompressor.compress(params, scheme).items():
            model_state[f"{module}.{key}"] = t
    out.mkdir()
    save_file(model_state, str(out / "model.safetensors"))
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": args.model_dump()}},
        "ignore": ["lm_head"]}
    (out / "config.json").write_text(json.dumps(config))
    (out / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    return out, scheme


@pytest.mark.parametrize("symmetric", [False, True])
def test_compressed_tensors_import_matches_the_library(checkpoint_factory, tmp_path, symmetric):
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor

    source = checkpoint_factory("qwen3", seed=5, **SMALL)
    ct, scheme = compressed_tensors_checkpoint(source, tmp_path / "ct", 32, symmetric)
    converted = convert_checkpoint(ct, tmp_path / "tyllm")
    ours, theirs = load_file(converted / "model.safetensors"), load_file(ct / "model.safetensors")
    module = "model.layers.1.mlp.down_proj"
    local = {k.removeprefix(module + "."): v for k, v in theirs.items() if k.startswith(module)}
    expected = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
    got = dequantize_int4(*(ours[f"{module}.{s}"] for s in ("qweight", "scales", "qzeros")),
                          32, torch.float32)
    assert torch.equal(got.to(expected.dtype), expected)  # the library computes in fp16


@pytest.mark.slow
@pytest.mark.parametrize("dies", [1, 2])
def test_int4_tree_matches_the_dequantized_model(awq_qwen2, tmp_path, dies):
    converted = convert_checkpoint(awq_qwen2, tmp_path / "converted")
    tree = Path(build_and_compile_llm(converted, tmp_path / "tree" / f"{dies}die",
                                      max_kv_cache_size=64, seq_len_list=[1, 8], dev_count=dies,
                                      progress=False, export_onnx=dies == 2,
                                      kv_windows=[8, 16],  # decode crosses a window
                                      batch_size_list=[1, 2]))
    from tyllm import runtime

    reference = load_quantized_model(awq_qwen2)
    with runtime.load(tree) as session:
        got = [session.generate(ids, max_new_tokens=10) for ids in PROMPTS]
        together = session.generate_batch(PROMPTS, max_new_tokens=10)  # int4 batched decode
    assert got == [greedy(reference, ids, 10) for ids in PROMPTS]
    assert together == got
    config = json.loads((tree / "config.json").read_text())
    assert config["quantization"] == {"quant_method": "tyllm_int4", "bits": 4, "group_size": 32,
                                      "zero_point": True}
    params = load_file(tree / "batch_1" / "common_die0.params")
    assert params["layers.0.mlp.down_proj.qweight"].dtype == torch.uint8
    assert "layers.0.mlp.down_proj.weight" not in params
    if dies == 2:  # the ONNX twins unpack the same way: onnxruntime agrees with TVM
        from tyllm.cli import main

        assert main(["verify", str(tree)]) == 0


def test_unsupported_quant_type_is_refused(awq_qwen2, tmp_path):
    with pytest.raises(TyllmError, match="--quant_type 'gptq' is not supported"):
        convert_checkpoint(awq_qwen2, tmp_path / "out", quant_type="gptq")
    assert not (tmp_path / "out").exists()


def test_missing_quantization_fields_are_named(awq_qwen2, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((awq_qwen2 / "config.json").read_text())
    del config["quantization_config"]["group_size"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(TyllmError, match=r"lacks \['group_size'\]"):
        convert_checkpoint(broken, tmp_path / "out")
    del config["quantization_config"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(TyllmError, match="float checkpoint"):
        convert_checkpoint(broken, tmp_path / "out")


def test_compiler_refuses_an_unconverted_awq_checkpoint(awq_qwen2, tmp_path):
    with pytest.raises(TyllmError, match=r"checkpoint_convert\.py"):
        build_and_compile_llm(awq_qwen2, tmp_path / "tree" / "1die", max_kv_cache_size=64,
                              progress=False)
    assert not (tmp_path / "tree" / "1die").exists()


def test_die_count_that_splits_a_group_is_refused(checkpoint_factory, tmp_path):
    # 6 heads x head_dim 8 on 4 dies -> 2, 2, 1, 1 heads: 8 inputs of o_proj, not a group of 16.
    source = checkpoint_factory("llama", seed=1, hidden_size=48, intermediate_size=96)
    awq = awq_checkpoint(source, tmp_path / "awq", group_size=16)
    converted = convert_checkpoint(awq, tmp_path / "converted")
    with pytest.raises(TyllmError, match="not whole int4 groups of 16"):
        build_and_compile_llm(converted, tmp_path / "tree" / "4die", max_kv_cache_size=64,
                              dev_count=4, progress=False)


def test_script_reports_errors_and_refuses_a_non_empty_destination(awq_qwen2, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "checkpoint_convert.py"),
                          "--src", str(awq_qwen2), "--dst", str(tmp_path / "taken"),
                          "--quant_type", "awq"], capture_output=True, text=True)
    assert run.returncode == 2 and "not an empty folder" in run.stderr
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_graph_dequantization_of_converted_weights_equals_the_source_checkpoints(awq_qwen2,
                                                                                  tmp_path):
    """The graph's dequantization of the tyllm layout equals the dequantized AWQ source as
    tyllm reads it (AWQ's nibble order and vLLM's own AWQ loader check that reading in
    tests/test_quant.py)."""
    from tyllm.quant.checkpoint import dequantized_state

    converted = load_file(convert_checkpoint(awq_qwen2, tmp_path / "c") / "model.safetensors")
    reference = dequantized_state(awq_qwen2)
    for module in ("model.layers.0.self_attn.o_proj", "model.layers.1.mlp.gate_proj"):
        got = dequantize_int4(*(converted[f"{module}.{s}"] for s in ("qweight", "scales",
                                                                     "qzeros")),
                              32, torch.float32)
        assert torch.equal(got, reference[f"{module}.weight"])


@pytest.mark.slow
def test_vlm_quantizes_the_language_model_only(vlm_checkpoint, tmp_path):
    """Qwen2.5-VL: AWQ on the language model, the vision tower stays float; the int4 tree on
    2 language dies answers an image prompt like the dequantized model in HF."""
    import shutil

    from transformers import AutoModelForImageTextToText, PreTrainedTokenizerFast
    from vlm_models import SIZES, picture
    from vlm_reference import hf_generate

    from tyllm import runtime
    from tyllm.build_util import build_and_compile_vlm

    source = vlm_checkpoint("qwen2_5_vl")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
    model = AutoModelForImageTextToText.from_pretrained(source).eval()
    vision_before = {n: p.clone() for n, p in model.model.visual.named_parameters()}
    calib = get_dataloader(word_texts(4, 0), tokenizer, max_sequence_length=96)
    quantized = quantize_model(model, get_awq_config(group_size=16, n_grid=5), calib, tokenizer)
    assert len(quantized.packed) == 7 * model.config.text_config.num_hidden_layers
    assert all(n.startswith("model.language_model.layers.") for n in quantized.packed)
    assert all(torch.equal(p, vision_before[n])
               for n, p in quantized.model.model.visual.named_parameters())
    awq = save_quantized_model(quantized, tmp_path / "awq", tokenizer)
    reference = tmp_path / "reference"
    load_quantized_model(awq).save_pretrained(reference)
    for folder in (awq, reference):  # tokenizer and processor files, as a user keeps them
        for extra in source.glob("*.json*"):
            if not (folder / extra.name).exists():
                shutil.copyfile(extra, folder / extra.name)
    config = json.loads((awq / "config.json").read_text())["quantization_config"]
    assert config["modules_to_not_convert"] == ["visual"]
    converted = convert_checkpoint(awq, tmp_path / "converted")
    tree = build_and_compile_vlm(converted, tmp_path / "tree" / "2die", num_die=2,
                                 image_sizes=(SIZES["qwen2_5_vl"],), modalities=("image",),
                                 prefill_lens=(16,), max_model_len=160, export_onnx=False,
                                 progress=False)
    image = picture(SIZES["qwen2_5_vl"], 1)
    prompt = "w5 w6 <|vision_start|><|image_pad|><|vision_end|> w7 w8"
    with runtime.load(tree) as session:
        got = session.generate_multimodal(prompt, images=[image], max_new_tokens=8)
    assert got == hf_generate(reference, prompt, images=[image], max_new_tokens=8)
    assert json.loads((Path(tree) / "config.json").read_text())["quantization"]["group_size"] == 16


def test_load_quantized_model_reads_every_format(awq_qwen2, tmp_path):
    """The dequantized reference is the same from AutoAWQ and from the converted checkpoint."""
    converted = convert_checkpoint(awq_qwen2, tmp_path / "converted")
    a, b = load_quantized_model(awq_qwen2), load_quantized_model(converted)
    ids = torch.tensor([PROMPTS[1]])
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


def test_failed_conversion_leaves_nothing_behind(awq_qwen2, tmp_path):
    converted = convert_checkpoint(awq_qwen2, tmp_path / "converted")
    config = json.loads((converted / "config.json").read_text())
    config["quantization_config"]["group_size"] = 64  # the tensors hold groups of 32
    (converted / "config.json").write_text(json.dumps(config))
    with pytest.raises(TyllmError, match="do not match group_size=64"):
        convert_checkpoint(converted, tmp_path / "back")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted"]


def test_compressed_tensors_schemes_tyllm_cannot_run_are_named(tmp_path):
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
               "group_size": 32, "actorder": "group"}
    config = {"quantization_config": {
        "quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                      "input_activations": {"num_bits": 8}}}}}
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "config.json").write_text(json.dumps(config))
    with pytest.raises(TyllmError, match=r"activation quantization.*actorder 'group'"):
        convert_checkpoint(tmp_path / "ct", tmp_path / "out")
