"""Logit accuracy of compiled trees against HF float32 (fp32 exact, fp16 within tolerance)."""

import pytest
import torch
from models import load_hf

from tyllm import runtime
from tyllm.build_util import build_and_compile_llm

pytestmark = pytest.mark.slow

FP16_TOLERANCE = 1e-2  # max |logit - HF fp32 logit| / max(1, max |HF fp32 logit|); see docs
PROMPT = [3, 17, 92, 45, 7, 200, 11, 64, 5, 150, 33]


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-4),
                                                  ("float16", FP16_TOLERANCE)])
def test_last_token_logits_match_hf_fp32(dtype, tolerance, checkpoint_factory, tmp_path):
    ckpt = checkpoint_factory("qwen3")
    tree = build_and_compile_llm(ckpt, tmp_path / "2die", max_kv_cache_size=32,
                                 seq_len_list=[1, 8], dev_count=2, dtype=dtype,
                                 export_onnx=False, progress=False,
                                 kv_windows=[4])  # the 2nd prefill chunk changes window
    with torch.no_grad():
        reference = load_hf(ckpt)(torch.tensor([PROMPT])).logits[0, -1]
    with runtime.load(tree) as session:
        logits = session.prefill(PROMPT).float()
    error = (logits - reference).abs().max().item() / max(1.0, reference.abs().max().item())
    print(f"{dtype}: relative max |logit error| vs HF fp32 = {error:.2e}")
    assert error <= tolerance
    assert torch.argmax(logits) == torch.argmax(reference)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matmuls_accumulate_in_float32_like_torch(dtype, tmp_path):
    """A 16384-wide dot product rounded to half precision at every step drifts by ~0.8; torch's
    CPU kernels (and the compiled graphs) accumulate in float32 and round once."""
    from tyllm.backends.emulated_cpu import DieProgram, TargetSpec, lower_to_library

    from tyllm.capture.export import export_module
    from tyllm.models.decoder import Linear
    from tyllm.models.panels import to_panels

    torch.manual_seed(0)
    k = 16384
    x, weight = torch.randn(4, k).to(dtype), (torch.randn(64, k) * 0.05).to(dtype)
    linear = Linear(64, k, bias=False, dtype=dtype, panels=16)
    linear.weight.data = to_panels(weight, linear.panels)
    lower_to_library(export_module(linear, {"x": x}), tmp_path / "linear.so", TargetSpec(2))
    out = DieProgram(tmp_path / "linear.so", [linear.weight.data])(x)[0].float()
    exact = torch.nn.functional.linear(x.float(), weight.float())
    torch_error = (torch.nn.functional.linear(x, weight).float() - exact).abs().max()
    assert (out - exact).abs().max() <= 2 * torch_error
