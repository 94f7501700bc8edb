"""The emulated CPU backend on int4 linears: unpacking fused into the matmul, scheduled, exact."""

import pytest
import torch
import tvm
from tyllm.backends.emulated_cpu import DieProgram, TargetSpec, lower_to_library
from tyllm.backends.emulated_cpu.lower import import_program
from tyllm.backends.emulated_cpu.pipeline import build_pipeline

from tyllm.capture.export import export_module
from tyllm.models.decoder import Int4Linear
from tyllm.quant.int4 import dequantize_int4


def int4_linear(out_features=96, in_features=128, group_size=32, bias=False, seed=0):
    torch.manual_seed(seed)
    layer = Int4Linear(out_features, in_features, bias, torch.float32, group_size)
    layer.qweight.data = torch.randint(0, 256, layer.qweight.shape, dtype=torch.uint8)
    layer.scales.data = torch.rand(layer.scales.shape) * 0.1
    layer.qzeros.data = torch.randint(0, 16, layer.qzeros.shape, dtype=torch.uint8)
    if bias:
        layer.bias.data = torch.randn(out_features)
    return layer


@pytest.mark.parametrize("rows", [1, 8])
def test_unpacking_is_fused_into_one_scheduled_matmul_kernel(rows):
    module, _ = import_program(export_module(int4_linear(), {"x": torch.randn(rows, 128)}))
    target = TargetSpec(1).tvm_target()
    lowered = build_pipeline(target)(module)
    kernels = [f for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(kernels) == 1  # no separate unpacking kernel writing a float weight
    (kernel,) = kernels
    assert kernel.attrs["tirx.is_scheduled"]
    assert '"uint8"' in kernel.script()  # it reads the packed weights itself


@pytest.mark.parametrize(("rows", "bias"), [(1, False), (8, True), (12, False)])
def test_compiled_int4_linear_matches_torch(tmp_path, rows, bias):
    layer = int4_linear(bias=bias, seed=rows)
    x = torch.randn(rows, 128)
    library = tmp_path / "linear.so"
    order = lower_to_library(export_module(layer, {"x": x}), library, TargetSpec(2))
    params = dict(layer.named_parameters())
    got = DieProgram(library, [params[n] for n in order])(x)[0]
    weight = dequantize_int4(layer.qweight, layer.scales, layer.qzeros, 32, torch.float32)
    expected = x.double() @ weight.double().t() + (layer.bias.double() if bias else 0)
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-5)
