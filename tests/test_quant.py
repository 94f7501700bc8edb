"""tyllm.quant: int4 groups, AutoAWQ packing, AWQ against round-to-nearest, checkpoints, data."""

import json

import pytest
import torch
from models import load_hf

from tyllm.errors import TyllmError
from tyllm.quant import (
    get_awq_config,
    get_dataloader,
    load_quantized_model,
    quantize_model,
    save_quantized_model,
)
from tyllm.quant.groups import dequantize, fake_quantize, quantize
from tyllm.quant.pack import pack_linear, unpack_linear

SMALL = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4,
             num_key_value_heads=2, head_dim=32, vocab_size=320, num_hidden_layers=2)


def test_group_round_trip_error_is_at_most_half_a_step():
    w = torch.randn(16, 128)
    q, scales, zeros = quantize(w, 32, 4)
    assert int(q.min()) >= 0 and int(q.max()) <= 15
    err = (dequantize(q, scales, zeros) - w).abs().reshape(16, 4, 32)
    assert bool((err <= scales[..., None] * 0.5 + 1e-5).all())


def test_autoawq_packing_round_trips():
    q = torch.randint(0, 16, (24, 64), dtype=torch.int32)
    scales, zeros = torch.rand(24, 2) + 0.1, torch.randint(0, 16, (24, 2)).float()
    packed = pack_linear(q, scales, zeros)
    assert packed["qweight"].shape == (64, 3) and packed["qweight"].dtype == torch.int32
    assert packed["scales"].shape == (2, 24) and packed["qzeros"].shape == (2, 3)
    q2, s2, z2 = unpack_linear(**packed)
    assert torch.equal(q2, q) and torch.equal(z2.float(), zeros)
    assert s2.dtype == torch.float16  # as stored
    assert torch.allclose(s2.float(), scales, rtol=1e-3)


def test_packing_follows_awq_nibble_order():
    q = torch.arange(8, dtype=torch.int32).view(1, 8).expand(8, 8)  # column j holds j
    word = pack_linear(q.t().contiguous(), torch.ones(8, 1), torch.zeros(8, 1))["qweight"]
    nibbles = [(int(word[0, 0]) >> (4 * i)) & 0xF for i in range(8)]
    assert nibbles == [0, 2, 4, 6, 1, 3, 5, 7]


def test_scale_search_protects_salient_channels():
    """The paper's setting on one linear: a few input channels with large activations."""
    from tyllm.quant.awq import AwqConfig, search_scales

    torch.manual_seed(0)
    x = torch.randn(512, 128)
    x[:, :4] *= 50
    w = torch.randn(64, 128) * 0.05
    fc = torch.nn.Linear(128, 64, bias=False)
    fc.weight.data.copy_(w)
    reference = x @ w.t()
    rtn_err = float((x @ fake_quantize(w, 32, 4).t() - reference).pow(2).mean())
    s = search_scales(x, [fc], AwqConfig(group_size=32))
    awq_err = float((x @ (fake_quantize(w * s, 32, 4) / s).t() - reference).pow(2).mean())
    assert awq_err < 0.6 * rtn_err
    assert float(s[:4].min()) > float(s[4:].max())  # the salient channels are scaled up


@pytest.fixture(scope="module")
def outlier_model(checkpoint_factory):
    """A small Qwen3 whose norms give a few channels large activations, as trained LLMs have."""
    model = load_hf(checkpoint_factory("qwen3", seed=5, **SMALL))
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[:4] *= 30
    return model


def word_texts(n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [" ".join(f"w{int(i)}" for i in torch.randint(1, 320, (200,), generator=g))
            for _ in range(n)]


def loss(model, samples) -> float:
    with torch.no_grad():
        return sum(float(model(s, labels=s).loss) for s in samples) / len(samples)


def rtn(model, group_size):
    import copy

    model = copy.deepcopy(model)
    with torch.no_grad():
        for layer in model.model.layers:
            for fc in layer.modules():
                if isinstance(fc, torch.nn.Linear):
                    fc.weight.copy_(fake_quantize(fc.weight, group_size, 4))
    return model


def test_awq_beats_round_to_nearest_and_saves_a_readable_checkpoint(outlier_model,
                                                                    checkpoint_factory, tmp_path):
    import copy

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_factory("qwen3", seed=5, **SMALL))
    calib = get_dataloader(word_texts(8, 0), tokenizer, max_sequence_length=128)
    held_out = get_dataloader(word_texts(4, 1), tokenizer, max_sequence_length=128)
    float_loss = loss(outlier_model, held_out)
    rtn_loss = loss(rtn(outlier_model, 32), held_out)
    quantized = quantize_model(copy.deepcopy(outlier_model), get_awq_config(group_size=32),
                               calib, tokenizer)
    awq_loss = loss(quantized.model, held_out)
    assert abs(awq_loss - float_loss) < abs(rtn_loss - float_loss)
    out = save_quantized_model(quantized, tmp_path / "awq", tokenizer)
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config == {"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True,
                      "version": "gemm", "modules_to_not_convert": None}
    reloaded = load_quantized_model(out)
    with torch.no_grad():
        a, b = quantized.model(held_out[0]).logits, reloaded(held_out[0]).logits
    assert float((a - b).abs().max()) < 2e-2 * float(a.abs().max())  # fp16 scales on disk


def test_group_size_must_divide_the_input_dimension(checkpoint_factory):
    from transformers import AutoTokenizer

    path = checkpoint_factory("qwen3", seed=5, **SMALL)
    model, tokenizer = load_hf(path), AutoTokenizer.from_pretrained(path)
    calib = get_dataloader(word_texts(2, 0), tokenizer, max_sequence_length=64)
    with pytest.raises(TyllmError, match="group_size=96 does not divide"):
        quantize_model(model, get_awq_config(group_size=96), calib, tokenizer)


def test_too_little_calibration_data_is_refused(checkpoint_factory):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_factory("qwen3", seed=5, **SMALL))
    with pytest.raises(TyllmError, match="Too little calibration data"):
        get_dataloader(["w1 w2 w3"], tokenizer, max_sequence_length=512)


def test_jsonl_column_and_default_cpython_prose(tmp_path, checkpoint_factory):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_factory("qwen3", seed=5, **SMALL))
    rows = tmp_path / "calib.jsonl"
    rows.write_text("\n".join(json.dumps({"text": t}) for t in word_texts(3, 2)))
    samples = get_dataloader(str(rows), tokenizer, max_sequence_length=100, column="text")
    assert len(samples) == 6 and samples[0].shape == (1, 100)
    with pytest.raises(TyllmError, match="no 'article' field"):
        get_dataloader(str(rows), tokenizer)
    assert len(get_dataloader(None, tokenizer, num_max_orig_samples=4,
                              max_sequence_length=64)) >= 1


def test_quantization_config_missing_fields_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"bits": 4}}))
    with pytest.raises(TyllmError, match="lacks"):
        load_quantized_model(tmp_path)


def stock_vllm_has_cpu_awq() -> bool:
    """Whether this machine's vLLM CPU build has its int4 GEMM: the AVX2 build (CPUs without
    AVX-512) ships without `cpu_gemm_wna16`, so stock vLLM cannot run AWQ there at all."""
    import subprocess
    import sys

    probe = ("import torch\nfrom vllm.platforms import current_platform\n"
             "import vllm._custom_ops\nprint(hasattr(torch.ops._C, 'cpu_gemm_wna16'))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return run.stdout.strip().endswith("True")


@pytest.mark.slow
def test_stock_vllm_loads_the_saved_checkpoint(outlier_model, checkpoint_factory, tmp_path):
    """vLLM's own AWQ loader (`quantization="awq"`) reads what save_quantized_model writes and
    generates the same greedy tokens as the dequantized model."""
    import copy

    if not stock_vllm_has_cpu_awq():
        pytest.skip("this CPU has no AVX-512: vLLM's CPU build here lacks its AWQ kernel "
                    "(torch.ops._C.cpu_gemm_wna16), so stock vLLM cannot load any AWQ model")

    from models import greedy
    from transformers import AutoTokenizer
    from vllm_jobs import engine, request, run_job

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_factory("qwen3", seed=5, **SMALL))
    calib = get_dataloader(word_texts(8, 0), tokenizer, max_sequence_length=128)
    quantized = quantize_model(copy.deepcopy(outlier_model), get_awq_config(group_size=32),
                               calib, tokenizer)
    out = save_quantized_model(quantized, tmp_path / "awq", tokenizer)
    prompts = [[5, 17, 3, 99, 42, 7], [200, 13, 8], [31, 41, 59, 26, 53, 58, 97, 93]]
    reference = load_quantized_model(out)
    expected = [greedy(reference, ids, 8) for ids in prompts]
    outputs = run_job(tmp_path / "vllm", engine(out, 1, 128, chunked=False, quantization="awq",
                                                dtype="float16"),
                      [request(ids, max_tokens=8, ignore_eos=True) for ids in prompts],
                      stock=True)
    assert [o["token_ids"] for o in outputs] == expected


def test_awq_layout_comes_from_the_architecture_registry(checkpoint_factory):
    from tyllm.models.llama.awq import LLAMA_AWQ
    from tyllm.quant.layers import awq_layout

    assert awq_layout(load_hf(checkpoint_factory("qwen2"))) is LLAMA_AWQ
    with pytest.raises(TyllmError, match="does not quantize phi3"):
        awq_layout(load_hf(checkpoint_factory("phi3")))
