"""The emulated CPU backend on int4 linears: unpacking fused into the matmul, scheduled, exact."""

import math
import re

import pytest
import torch
import tvm
from tyllm.backends.emulated_cpu import DieProgram, TargetSpec, int4_integer_dot, lower_to_library
from tyllm.backends.emulated_cpu.int4_integer_dot import serves as serves_integer_dot
from tyllm.backends.emulated_cpu.int4_matmul import MAX_ROWS
from tyllm.backends.emulated_cpu.lower import import_program
from tyllm.backends.emulated_cpu.pipeline import build_pipeline
from tyllm.backends.emulated_cpu.schedules import PANEL_LANES

from tyllm.capture.export import export_module
from tyllm.models.decoder import Int4Linear
from tyllm.models.panels import to_panels
from tyllm.quant.int4 import dequantize_int4


def int4_linear(out_features=96, in_features=128, group_size=32, bias=False, seed=0,
                panels=None, dtype=torch.float32):
    torch.manual_seed(seed)
    layer = Int4Linear(out_features, in_features, bias, dtype, group_size, panels)
    layer.qweight.data = torch.randint(0, 256, layer.qweight.shape, dtype=torch.uint8)
    layer.scales.data = (torch.rand(layer.scales.shape) * 0.1).to(dtype)
    layer.qzeros.data = torch.randint(0, 16, layer.qzeros.shape, dtype=torch.uint8)
    if bias:
        layer.bias.data = torch.randn(out_features)
    return layer


def lowered_kernels(layer, x, cores=1) -> dict:
    module, _ = import_program(export_module(layer, {"x": x}))
    lowered = build_pipeline(TargetSpec(cores).tvm_target())(module)
    return {gv.name_hint: f for gv, f in lowered.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.mark.parametrize("rows", [1, 8])
def test_unpacking_is_fused_into_one_scheduled_matmul_kernel(rows):
    kernels = lowered_kernels(int4_linear(panels=None), torch.randn(rows, 128))
    assert len(kernels) == 1  # no separate unpacking kernel writing a float weight
    (kernel,) = kernels.values()
    assert kernel.attrs["tirx.is_scheduled"]
    assert '"uint8"' in kernel.script()  # it reads the packed weights itself


@pytest.mark.parametrize("rows", [1, 8, MAX_ROWS + 4])
def test_int4_panels_are_one_kernel_reading_the_packed_bytes(rows):
    """Up to MAX_ROWS rows the host's int4 kernel (int4_matmul.py), more (prefill) the
    scheduled matmul with the unpacking inlined: either way one kernel, no float weight."""
    kernels = lowered_kernels(int4_linear(panels=PANEL_LANES), torch.randn(rows, 128))
    assert len(kernels) == 1
    ((name, kernel),) = kernels.items()
    assert name.startswith("int4_linear_") == (rows <= MAX_ROWS)
    assert kernel.attrs["tirx.is_scheduled"]
    assert '"uint8"' in kernel.script()


@pytest.mark.parametrize(("rows", "bias", "panels"),
                         [(1, False, None), (8, True, None), (12, False, None),
                          (1, False, PANEL_LANES), (8, True, PANEL_LANES),
                          (12, False, PANEL_LANES)])
def test_compiled_int4_linear_matches_torch(tmp_path, rows, bias, panels):
    layer = int4_linear(bias=bias, seed=rows, panels=panels)
    x = torch.randn(rows, 128)
    got = compiled(layer, x, tmp_path)
    weight = dequantize_int4(*layer.packed(), 32, torch.float32)
    expected = x.double() @ weight.double().t() + (layer.bias.double() if bias else 0)
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("rows", "dtype"), [(1, torch.float16), (8, torch.float16),
                                             (1, torch.bfloat16), (12, torch.bfloat16)])
def test_half_precision_int4_linear_in_panels_matches_float32_dequantization(tmp_path, rows,
                                                                              dtype):
    """A half-precision tree's int4 linear: half-precision activations and scales, the weight
    and the sum in float32, one rounding of the output to the activations' dtype."""
    layer = int4_linear(out_features=64, in_features=256, group_size=64, seed=rows,
                        panels=PANEL_LANES, dtype=dtype)
    x = torch.randn(rows, 256).to(dtype)
    got = compiled(layer, x, tmp_path)
    weight = dequantize_int4(*layer.packed(), 64, torch.float32)
    expected = (x.double() @ weight.double().t()).to(dtype)
    assert got.dtype == dtype
    tolerance = 2e-3 if dtype == torch.float16 else 2e-2
    assert torch.allclose(got.double(), expected.double(), rtol=tolerance, atol=tolerance)


def test_int4_panels_hold_the_rows_of_the_packed_tensors():
    layer = int4_linear(panels=PANEL_LANES)
    assert layer.qweight.shape == (96 // PANEL_LANES, 64, PANEL_LANES)
    assert layer.scales.shape == layer.qzeros.shape == (96 // PANEL_LANES, 4, PANEL_LANES)
    qweight, scales, qzeros = layer.packed()
    assert torch.equal(to_panels(qweight, PANEL_LANES), layer.qweight)
    assert qweight.shape == (96, 64) and scales.shape == qzeros.shape == (96, 4)


def compiled(layer, x, tmp_path) -> torch.Tensor:
    library = tmp_path / "linear.so"
    order = lower_to_library(export_module(layer, {"x": x}), library, TargetSpec(2))
    params = dict(layer.named_parameters())
    return DieProgram(library, [params[n] for n in order])(x)[0]


@pytest.mark.parametrize("rows", [1, MAX_ROWS + 4])
def test_int4_panels_are_unpacked_inside_the_kernel_with_vector_fmas(rows):
    """No float weight buffer (the older per-task dequantization writes one), and the
    compiled kernel multiplies with vector FMAs (the assembly, where the host has FMA)."""
    layer = int4_linear(panels=PANEL_LANES, dtype=torch.float16)
    x = torch.randn(rows, 128).half()
    kernels = lowered_kernels(layer, x, cores=2)
    (kernel,) = [f for name, f in kernels.items() if "matmul" in name or "int4" in name]
    shapes = [[int(d) for d in re.findall(r"\d+", shape.replace("int64", ""))] for shape in
              re.findall(r"alloc_buffer\(\((.*?)\)", kernel.script(), re.MULTILINE)]
    if rows <= MAX_ROWS:  # per-row buffers (inputs, their group sums, a task's sums), and
        # the integer kernel's 64-byte permutation table
        assert shapes and all(shape[0] == rows or math.prod(shape) <= 64 for shape in shapes)
    else:  # no buffer with a K axis: the weight is never written out
        assert all(128 not in shape for shape in shapes)
    if " fma " not in f" {open('/proc/cpuinfo').read()} ":
        pytest.skip("the host CPU has no FMA instructions")
    module, _ = import_program(export_module(layer, {"x": x}))
    target = TargetSpec(2).tvm_target()
    compiled = tvm.compile(module, target=target, relax_pipeline=build_pipeline(target))
    assembly = compiled.mod.imports[0].inspect_source("asm")
    assert re.search(r"vfmadd\w*ps\s+%[yz]mm", assembly)


def test_int4_kernel_applies_each_group_scale_once():
    """The host kernel's inner loop (a group's inputs) holds one FMA per weight vector and
    nibble, and no multiply by a scale: scales are applied to the group's partial sums."""
    layer = int4_linear(out_features=128, in_features=128, panels=PANEL_LANES)
    kernels = lowered_kernels(layer, torch.randn(1, 128))
    kernel = kernels["int4_linear_m1_n128_k128_g32_p16_float32_float32"]
    assert kernel.attrs["tirx.is_scheduled"]
    text = kernel.script()
    loop = "for i in range" if serves_integer_dot(1, 32, PANEL_LANES) else "for e0 in range"
    inner = text[text.index(loop):]
    inner = inner[:inner.index(" = acc[")]  # up to the group's flush into the outputs
    assert "scales" not in inner and "qzeros" not in inner and "qweight" in inner


class SharedInput(torch.nn.Module):
    """q/k/v-like int4 linears of one input (one with a bias), and one of another input."""

    def __init__(self):
        super().__init__()
        self.q = int4_linear(out_features=64, bias=True, seed=1, panels=PANEL_LANES)
        self.k = int4_linear(out_features=32, seed=2, panels=PANEL_LANES)
        self.v = int4_linear(out_features=48, seed=3, panels=PANEL_LANES)
        self.o = int4_linear(out_features=128, in_features=64, seed=4, panels=PANEL_LANES)

    def forward(self, x):
        return self.o(self.q(x)), self.k(x), self.v(x)


@pytest.mark.parametrize("rows", [1, MAX_ROWS])
def test_linears_of_one_input_are_one_launch(rows):
    kernels = lowered_kernels(SharedInput(), torch.randn(rows, 128))
    names = sorted(n for n in kernels if n.startswith("int4_"))
    assert len(names) == 2, names  # q/k/v in one kernel, o (another input) in its own
    assert names[1].startswith("int4_linears_") and names[1].endswith("_n64b_n32_n48")


@pytest.mark.parametrize("rows", [1, 3])
def test_fused_linears_give_each_linear_s_own_output(tmp_path, rows):
    model = SharedInput()
    x = torch.randn(rows, 128)
    library = tmp_path / "shared.so"
    order = lower_to_library(export_module(model, {"x": x}), library, TargetSpec(2))
    params = dict(model.named_parameters())
    got = DieProgram(library, [params[n] for n in order])(x)
    expected = model(x)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        scale = float(e.abs().max())  # float32 sums in another order: relative to the output
        assert torch.allclose(g.double(), e.double(), rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("rows", [1, 3, MAX_ROWS])
def test_decode_rows_use_integer_dot_products_where_the_host_has_them(tmp_path, rows):
    """Decode rows as fixed-point digits against the nibbles (`vpdpbusd`), within float32's
    error of the dequantized product (3 rows: passes of 3, 8: two passes of 4); on a host
    without VNNI the float kernel serves them."""
    layer = int4_linear(out_features=64, in_features=256, group_size=64, seed=rows,
                        panels=PANEL_LANES)
    x = torch.randn(rows, 256) * torch.logspace(-3, 1, 256)  # inputs of many magnitudes
    got = compiled(layer, x, tmp_path)
    weight = dequantize_int4(*layer.packed(), 64, torch.float32)
    expected = x.double() @ weight.double().t()
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-5)
    if not serves_integer_dot(rows, 64, PANEL_LANES):
        pytest.skip("the host CPU has no AVX-512 VNNI and VBMI")
    module, _ = import_program(export_module(layer, {"x": x}))
    target = TargetSpec(2).tvm_target()
    compiled_module = tvm.compile(module, target=target, relax_pipeline=build_pipeline(target))
    assembly = compiled_module.mod.imports[0].inspect_source("asm")
    assert re.search(r"vpdpbusd", assembly) and re.search(r"vpermb", assembly)


@pytest.mark.parametrize("rows", [1, MAX_ROWS])
def test_float_kernel_serves_hosts_without_integer_dot_products(tmp_path, monkeypatch, rows):
    """On a host without AVX-512 VNNI and VBMI the decode rows go to the float kernel (a
    mask, a conversion and an FMA per weight vector): the same product within float32's
    error, and no `vpdpbusd` in its assembly."""
    monkeypatch.setattr(int4_integer_dot, "host_has_integer_dot", lambda: False)
    layer = int4_linear(out_features=64, in_features=256, group_size=64, seed=rows,
                        panels=PANEL_LANES, bias=True)
    x = torch.randn(rows, 256)
    got = compiled(layer, x, tmp_path)
    weight = dequantize_int4(*layer.packed(), 64, torch.float32)
    expected = x.double() @ weight.double().t() + layer.bias.double()
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-5)
    module, _ = import_program(export_module(layer, {"x": x}))
    target = TargetSpec(2).tvm_target()
    compiled_module = tvm.compile(module, target=target, relax_pipeline=build_pipeline(target))
    assert "vpdpbusd" not in compiled_module.mod.imports[0].inspect_source("asm")
