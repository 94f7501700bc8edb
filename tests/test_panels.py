"""Weights in panels ([N, K] stored as [N / P, K, P]): the layout, the tied-head lookup, and the
emulated CPU backend folding the view into one scheduled matmul kernel that equals torch's."""

import pytest
import torch
import tvm
from tyllm.backends.emulated_cpu import DieProgram, TargetSpec, lower_to_library
from tyllm.backends.emulated_cpu.lower import import_program
from tyllm.backends.emulated_cpu.pipeline import build_pipeline

from tyllm.capture.export import export_module
from tyllm.models.decoder import Linear
from tyllm.models.panels import dense, panel_rows, panel_width, to_panels


def test_panels_hold_consecutive_outputs_and_round_trip():
    weight = torch.randn(48, 20)
    panels = to_panels(weight, 16)
    assert panels.shape == (3, 20, 16)
    assert torch.equal(panels[1, 5], weight[16:32, 5])
    assert torch.equal(dense(panels, 16), weight)


def test_a_width_that_does_not_divide_the_outputs_keeps_the_weight_plain():
    assert panel_width(48, 16) == 16
    assert panel_width(40, 16) is None
    assert panel_width(48, None) is None
    assert torch.equal(to_panels(torch.ones(40, 3), None), torch.ones(40, 3))


def test_rows_are_gathered_from_their_panels():
    table, rows = torch.randn(64, 12), torch.tensor([0, 17, 63, 17, 15, 16])
    assert torch.equal(panel_rows(to_panels(table, 16), rows, 16), table[rows])
    assert torch.equal(panel_rows(table, rows, None), table[rows])


def panel_linear(out_features=96, in_features=32, bias=False,
                 seed=0) -> tuple[Linear, torch.Tensor]:
    torch.manual_seed(seed)
    layer = Linear(out_features, in_features, bias, torch.float32, panels=16)
    weight = torch.randn(out_features, in_features)
    layer.weight.data = to_panels(weight, 16)
    if bias:
        layer.bias.data = torch.randn(out_features)
    return layer, weight


@pytest.mark.parametrize("rows", [1, 8, 128])
def test_the_view_is_folded_into_one_scheduled_matmul_kernel(rows):
    layer, _ = panel_linear()
    module, _ = import_program(export_module(layer, {"x": torch.randn(rows, 32)}))
    lowered = build_pipeline(TargetSpec(1).tvm_target())(module)
    kernels = [f for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(kernels) == 1  # no kernel writing the [N, K] view of the weight
    assert kernels[0].attrs["tirx.is_scheduled"]


@pytest.mark.parametrize(("rows", "bias"), [(1, False), (3, True), (8, False), (20, True)])
def test_compiled_panel_linear_matches_torch(tmp_path, rows, bias):
    layer, weight = panel_linear(bias=bias, seed=rows)
    x = torch.randn(rows, 32)
    library = tmp_path / "linear.so"
    order = lower_to_library(export_module(layer, {"x": x}), library, TargetSpec(2))
    params = dict(layer.named_parameters())
    got = DieProgram(library, [params[n] for n in order])(x)[0]
    expected = x.double() @ weight.double().t() + (layer.bias.double() if bias else 0)
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-5)
