"""Choices of the CPU schedule rules that decide speed, not results: a decode-size softmax is
not a thread-pool launch (with dies sharing the cores such launches made decode 2x slower), a
prefill-size one runs its rows in parallel."""

import pytest
import torch
import tvm
from tyllm.backends.emulated_cpu import TargetSpec
from tyllm.backends.emulated_cpu.lower import import_program
from tyllm.backends.emulated_cpu.pipeline import build_pipeline

from tyllm.capture.export import export_module


class Softmax(torch.nn.Module):
    def forward(self, scores):
        return torch.softmax(scores, -1, dtype=torch.float32)


@pytest.mark.parametrize(("rows", "parallel"), [(1, False), (128, True)])
def test_softmax_rows_run_in_parallel_only_at_prefill_size(rows, parallel):
    scores = torch.randn(3, rows, 272)
    module, _ = import_program(export_module(Softmax(), {"scores": scores}))
    lowered = build_pipeline(TargetSpec(2).tvm_target())(module)
    (kernel,) = [f for f in lowered.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert ("T.parallel" in kernel.script()) == parallel
