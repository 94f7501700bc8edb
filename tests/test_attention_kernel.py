"""The emulated CPU backend's attention kernels (backends/emulated_cpu/attention.py, and
few_rows_attention.py for up to FEW_ROWS rows) against the meaning of `tyllm::attention` (its torch
reference), through the real lowering: shapes with tails (head_dims below a vector or not a
multiple of one, windows and histories not a multiple of a key block), query heads mapped to KV
heads unevenly, a history mask with holes, no history, one row, fp16."""

import pytest
import torch
import tvm
from tvm import relax
from tyllm.backends.emulated_cpu import TargetSpec
from tyllm.backends.emulated_cpu.lower import import_program
from tyllm.backends.emulated_cpu.pipeline import build_pipeline

from tyllm.capture.export import export_module
from tyllm.capture.ops import (
    attention,
    attention_reference,
    attention_rows,
    attention_rows_reference,
)

LAYERS, CACHE, LAYER = 3, 160, 1


class OneAttention(torch.nn.Module):
    def __init__(self, kv_of: list[int]):
        super().__init__()
        self.kv_of = kv_of

    def forward(self, q, k, v, k_cache, v_cache, history_mask):
        return attention(q, k, v, k_cache, v_cache, history_mask, LAYER, self.kv_of)


def compiled(module, inputs: dict):
    mod, _ = import_program(export_module(module, inputs))
    target = TargetSpec(2).tvm_target()
    vm = relax.VirtualMachine(tvm.compile(mod, target=target,
                                          relax_pipeline=build_pipeline(target)), tvm.cpu())
    return lambda *args: torch.from_dlpack(vm["main"](*[tvm.runtime.from_dlpack(a)
                                                         for a in args])[0])


CASES = {  # kv_of, rows, head_dim, history mask (its length is the window)
    "groups, tails": ([0, 0, 0, 1, 1, 1], 8, 8, torch.arange(100) < 57),
    "uneven heads, holes": ([0, 0, 0, 1, 1], 16, 16,
                            (torch.arange(64) < 50) & (torch.arange(64) % 7 != 3)),
    "no history": ([0, 1], 128, 64, torch.zeros(64, dtype=torch.bool)),
    "decode": ([0, 0, 1, 1], 1, 32, torch.arange(150) < 149),
    "decode, uneven heads, holes": ([0, 0, 0, 1, 1], 1, 16,
                                    (torch.arange(64) < 50) & (torch.arange(64) % 7 != 3)),
    "decode, no history": ([0, 1], 1, 8, torch.zeros(64, dtype=torch.bool)),
    "decode, head dim 12": ([0, 1, 1], 1, 12, torch.arange(40) < 33),
    "few rows, uneven heads, holes": ([0, 0, 0, 1, 1], 5, 16,
                                      (torch.arange(64) < 50) & (torch.arange(64) % 7 != 3)),
    "few rows, no history, head dim 24": ([0, 1], 3, 24, torch.zeros(32, dtype=torch.bool)),
    "long rows": ([0, 0, 0, 1, 1, 1], 64, 64, torch.arange(150) < 130),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_equals_the_reference(case, dtype):
    kv_of, rows, head_dim, mask = CASES[case]
    kv_heads = max(kv_of) + 1
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    inputs = {"q": randn(len(kv_of), rows, head_dim), "k": randn(kv_heads, rows, head_dim),
              "v": randn(kv_heads, rows, head_dim),
              "k_cache": randn(LAYERS, kv_heads, CACHE, head_dim),
              "v_cache": randn(LAYERS, kv_heads, CACHE, head_dim), "history_mask": mask}
    got = compiled(OneAttention(kv_of), inputs)(*inputs.values())
    wide = [t.double() if t.is_floating_point() else t for t in inputs.values()]
    want = attention_reference(*wide, LAYER, kv_of)
    assert got.shape == want.shape and got.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 3e-3
    torch.testing.assert_close(got.double(), want, rtol=tolerance, atol=tolerance)


class RowsAttention(torch.nn.Module):
    """B sequences of one row, each on its own caches (batched decode): one kernel."""

    def __init__(self, kv_of: list[int]):
        super().__init__()
        self.kv_of = kv_of

    def forward(self, q, k, v, history_mask, k0, v0, k1, v1, k2, v2):
        return attention_rows(q, k, v, [k0, k1, k2], [v0, v1, v2], history_mask, LAYER,
                              self.kv_of)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kv_of", [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1]])
def test_rows_of_several_sequences_are_one_kernel_equal_to_the_reference(kv_of, dtype):
    kv_heads, head_dim, window = max(kv_of) + 1, 16, 64
    gen = torch.Generator().manual_seed(1)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    positions = torch.arange(window)
    masks = torch.stack([positions < 50, (positions < 20) & (positions % 5 != 2),
                         torch.zeros(window, dtype=torch.bool)])  # each its own history
    inputs = {"q": randn(len(kv_of), 3, head_dim), "k": randn(kv_heads, 3, head_dim),
              "v": randn(kv_heads, 3, head_dim), "history_mask": masks}
    for b in range(3):
        inputs |= {f"k{b}": randn(LAYERS, kv_heads, CACHE, head_dim),
                   f"v{b}": randn(LAYERS, kv_heads, CACHE, head_dim)}
    module = RowsAttention(kv_of)
    mod, _ = import_program(export_module(module, inputs))
    kernels = [gv.name_hint for gv in mod.get_global_vars() if "attention" in gv.name_hint]
    assert len(kernels) == 1 and kernels[0].startswith("attention_rows_b3_")
    got = compiled(module, inputs)(*inputs.values())
    wide = [t.double() if t.is_floating_point() else t for t in inputs.values()]
    q, k, v, mask, *caches = wide
    want = attention_rows_reference(q, k, v, caches[0::2], caches[1::2], mask, LAYER, kv_of)
    assert got.shape == want.shape == (3, len(kv_of) * head_dim) and got.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 3e-3
    torch.testing.assert_close(got.double(), want, rtol=tolerance, atol=tolerance)
