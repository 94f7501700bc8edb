"""The die all-reduce: the runtime's entry point (`collective.all_reduce`) and the packed function
the emulated CPU backend's graphs call (`tyllm.die_all_reduce`, its wrapper of the runtime's);
the native group and the Python groups sum in die order, bit-identically, for dies as threads;
a failing die releases the others."""

import functools
import operator
import shutil
import threading

import pytest
import torch
import tvm
from tyllm.backends.emulated_cpu.all_reduce import register_all_reduce

from tyllm.capture.ops import ALL_REDUCE_PACKED_FUNC
from tyllm.runtime import collective
from tyllm.runtime.native import native_library

DTYPES = [torch.float32, torch.float16]


def packed_all_reduce(x: torch.Tensor) -> torch.Tensor:
    """`x` reduced through the packed function, as a compiled graph calls it."""
    register_all_reduce()
    out = torch.empty_like(x)
    tvm.get_global_func(ALL_REDUCE_PACKED_FUNC)(tvm.runtime.from_dlpack(x),
                                                tvm.runtime.from_dlpack(out))
    return out


def reduce_on_die(group, rank: int, x: torch.Tensor, reduce=packed_all_reduce):
    """Die `rank` reduces `x` through `reduce`: the sum, or the error."""
    with collective.bind_member(group.member(rank)):
        try:
            return reduce(x)
        except Exception as e:
            return e


def run_dies(group, contributions: list[torch.Tensor], reduce=packed_all_reduce) -> list:
    """One thread per die, all reducing at once."""
    results: list = [None] * len(contributions)

    def die(rank: int) -> None:
        results[rank] = reduce_on_die(group, rank, contributions[rank], reduce)

    threads = [threading.Thread(target=die, args=(r,)) for r in range(len(contributions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def require_native() -> None:
    """Skips without a C++ compiler (the runtime then uses the Python all-reduce); with one,
    the native library must build."""
    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler here: the runtime uses the Python all-reduce")
    assert native_library() is not None, "g++ is here but the native all-reduce did not build"


@pytest.fixture(params=["native", "python"])
def make_group(request):
    native = request.param == "native"
    if native:
        require_native()
    groups = []

    def make(size: int, slot_bytes: int):
        groups.append(collective.thread_group(size, slot_bytes, native=native))
        return groups[-1]

    yield make
    for g in groups:
        g.abort()  # a die a failed test left waiting returns before the memory goes
        g.unlink()


@pytest.mark.parametrize("reduce", [packed_all_reduce, collective.all_reduce],
                         ids=["packed", "entry_point"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_die_gets_the_sum_in_die_order(make_group, dtype, reduce):
    gen = torch.Generator().manual_seed(0)
    parts = [torch.randn(7, 576, generator=gen).to(dtype) * 10 for _ in range(3)]
    group = make_group(3, 7 * 576 * 4)
    expected = functools.reduce(operator.add, parts)  # die 0 + die 1, then + die 2
    for _ in range(3):  # the group is reusable round after round
        results = run_dies(group, parts, reduce)
        for r in results:
            assert torch.equal(r, expected)


def test_a_contribution_smaller_than_the_slot(make_group):
    group = make_group(2, 8 * 64 * 4)
    parts = [torch.full((1, 64), 1.5), torch.full((1, 64), 2.0)]
    assert all(torch.equal(r, torch.full((1, 64), 3.5)) for r in run_dies(group, parts))


def test_abort_releases_a_die_waiting_for_another(make_group):
    group = make_group(2, 256)
    waiting: list = []

    def lonely() -> None:
        waiting.append(reduce_on_die(group, 0, torch.ones(4)))

    t = threading.Thread(target=lonely)
    t.start()
    t.join(timeout=0.5)
    assert t.is_alive()  # die 1 never comes: die 0 waits
    group.abort()
    t.join(timeout=30)
    assert not t.is_alive() and isinstance(waiting[0], Exception)


@pytest.mark.parametrize("reduce", [packed_all_reduce, collective.all_reduce],
                         ids=["packed", "entry_point"])
def test_outside_a_die_worker_the_error_says_how_to_run_graphs(reduce):
    with pytest.raises(Exception, match="outside a die worker"):
        reduce(torch.ones(4))


def test_tensors_cross_the_process_pipe_by_value():
    import pickle

    from tyllm.runtime.wire import from_wire, to_wire

    message = ("step", (1, torch.arange(6).view(2, 3), [torch.ones(2, dtype=torch.float16)],
                        {"pixels": torch.zeros(1, 4)}, 5, None))
    back = from_wire(pickle.loads(pickle.dumps(to_wire(message))))
    assert back[0] == "step" and back[1][0] == 1 and back[1][4:] == (5, None)
    assert torch.equal(back[1][1], message[1][1])
    assert back[1][2][0].dtype == torch.float16 and torch.equal(back[1][2][0], message[1][2][0])
    assert torch.equal(back[1][3]["pixels"], message[1][3]["pixels"])


class ScaledReduceRunner:
    """A die process that all-reduces (rank + 1) * x through the registered packed function."""

    all_reduce_bytes = staticmethod(lambda tree: 4096)

    def __init__(self, tree, rank: int):
        self.rank = rank

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return packed_all_reduce(x * (self.rank + 1))


@pytest.fixture(scope="module")
def small_tree(checkpoint_factory, tmp_path_factory):
    from tyllm.build_util import build_and_compile_llm
    from tyllm.runtime.tree import Tree

    out = tmp_path_factory.mktemp("collective") / "1die"
    return Tree(build_and_compile_llm(checkpoint_factory("qwen3"), out, max_kv_cache_size=16,
                                      seq_len_list=[1], export_onnx=False, progress=False))


@pytest.mark.parametrize("native", [True, False])
def test_die_processes_reduce_through_shared_memory(native, small_tree):
    from tyllm.runtime.workers import ProcessWorkers

    if native:
        require_native()
    workers = ProcessWorkers(small_tree, runner=ScaledReduceRunner, placement=[0, 0, 0],
                             native=native)
    try:
        x = torch.arange(12, dtype=torch.float32).view(3, 4)
        assert all(torch.equal(r, x * 6) for r in workers.step(x))
    finally:
        workers.close()


def test_a_bad_operand_is_refused_before_any_die_waits():
    require_native()
    group = collective.thread_group(1, 256)
    try:
        error = reduce_on_die(group, 0, torch.ones(4, dtype=torch.int64))
        assert "float32 or float16" in str(error)
        assert "slot" in str(reduce_on_die(group, 0, torch.ones(128)))  # 512 bytes > 256
        assert torch.equal(reduce_on_die(group, 0, torch.ones(4)), torch.ones(4))  # still usable
    finally:
        group.unlink()
