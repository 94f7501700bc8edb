"""Runtime inputs: what a caller passes to a session ends in one TyllmError, never a TypeError,
a silent truncation or a die process killed without a reason; a die that dies is named, and the
session fails the same way until closed, which releases everything."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from tyllm import runtime
from tyllm.build_util import build_and_compile_llm
from tyllm.errors import TyllmError
from tyllm.runtime.collective import all_reduce
from tyllm.runtime.session import Session
from tyllm.runtime.tree import Tree
from tyllm.runtime.workers import DieFailure, ProcessWorkers, ThreadWorkers


@pytest.fixture(scope="module")
def tree(checkpoint_factory, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("guard-runtime") / "1die"
    return Path(build_and_compile_llm(checkpoint_factory("llama"), out, max_kv_cache_size=16,
                                      seq_len_list=[1, 4], export_onnx=False, progress=False))


@pytest.fixture(scope="module")
def session(tree):
    with runtime.load(tree) as s:
        yield s


def test_a_batch_of_two_prompts_is_refused(session):
    with pytest.raises(TyllmError, match=r"takes one prompt but got a batch of 2"):
        session.generate([[1, 2, 3], [4, 5, 6]], max_new_tokens=2)


def test_a_batch_of_one_prompt_is_accepted(session):
    assert session.generate(torch.tensor([[1, 2, 3]]), 2) == session.generate([1, 2, 3], 2)


@pytest.mark.parametrize("ids", [[1.0, 2.7, 3.0], torch.tensor([1.0, 2.0]), [1, True]])
def test_float_token_ids_are_refused_not_truncated(session, ids):
    with pytest.raises(TyllmError, match=r"is not an integer"):
        session.generate(ids, max_new_tokens=2)


def test_integer_arrays_of_any_kind_are_accepted(session):
    import numpy as np

    expected = session.generate([1, 2, 3], 2)
    assert session.generate(np.array([1, 2, 3], dtype=np.int32), 2) == expected
    assert session.generate(torch.tensor([1, 2, 3], dtype=torch.int32), 2) == expected


def test_non_integer_max_new_tokens_is_refused(session):
    with pytest.raises(TyllmError, match=r"max_new_tokens=2.5 must be an integer"):
        session.generate([1, 2, 3], max_new_tokens=2.5)


def test_out_of_vocabulary_id_is_refused_before_the_graph(session):
    with pytest.raises(TyllmError, match=r"outside the model's vocabulary of 250"):
        session.generate([1, 250], max_new_tokens=2)


def test_processes_from_a_script_without_main_guard_name_the_fix(tree, tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(f"""
        from tyllm import runtime
        with runtime.load({str(tree)!r}, workers="processes") as session:
            print(session.generate([1, 2, 3], max_new_tokens=2))
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "TyllmError" in last and 'if __name__ == "__main__":' in last
    assert "code -9" not in result.stderr


@pytest.mark.parametrize("ids", [5, None, torch.tensor(5)])
def test_a_prompt_that_is_not_a_sequence_is_refused(session, ids):
    with pytest.raises(TyllmError, match="must be a sequence of token ids"):
        session.generate(ids, max_new_tokens=2)


def test_numpy_integer_max_new_tokens_is_accepted(session):
    import numpy as np

    assert len(session.generate([1, 2, 3], np.int64(2), stop_at_eos=False)) == 2


def test_extend_refuses_ids_outside_the_vocabulary(session):
    """The vLLM runner and `tyllm eval` call extend directly: no id may reach the graph's
    unchecked embedding lookup."""
    with pytest.raises(TyllmError, match="outside the model's vocabulary"):
        session.extend([1, 9999], 0, slot=0)


@pytest.fixture(scope="module")
def two_dies(checkpoint_factory, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("guard-runtime") / "2die"
    return Path(build_and_compile_llm(checkpoint_factory("qwen3"), out, max_kv_cache_size=16,
                                      seq_len_list=[1, 4], dev_count=2, export_onnx=False,
                                      progress=False))


def generate_in_thread(session, failures: list) -> threading.Thread:
    def run() -> None:
        try:
            session.generate([1, 2, 3], max_new_tokens=8, stop_at_eos=False)
        except Exception as e:
            failures.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("native", [True, False], ids=["native", "python-group"])
def test_a_die_process_killed_during_generate_is_named_and_closes_cleanly(two_dies, native):
    tree = Tree(two_dies)
    session = Session(tree, ProcessWorkers(tree, native=native))
    workers, failures = session.workers, []
    shm = Path("/dev/shm") / workers.group.name.lstrip("/")
    assert shm.exists()
    victim = workers.procs[1]
    os.kill(victim.pid, signal.SIGSTOP)  # die 0 waits for it in the all-reduce
    thread = generate_in_thread(session, failures)
    thread.join(timeout=2)
    assert thread.is_alive()  # it cannot finish while die 1 is stopped
    os.kill(victim.pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert [type(e) for e in failures] == [DieFailure]
    said = str(failures[0])
    assert said.startswith(f"die 1 (process {victim.pid}) was killed by signal SIGKILL (9)")
    assert "load the tree again" in said
    with pytest.raises(DieFailure) as again:
        session.generate([1, 2, 3], max_new_tokens=2)
    assert str(again.value) == said
    session.close()
    assert not shm.exists() and not any(p.is_alive() for p in workers.procs)


class FailsOnDieOne:
    """A die runner whose die 1 raises while die 0 waits for it in the all-reduce."""

    all_reduce_bytes = staticmethod(lambda tree: 4096)

    def __init__(self, tree, rank: int):
        self.rank = rank

    def step(self, x: torch.Tensor) -> torch.Tensor:
        if self.rank == 1:
            raise ValueError("die one broke")
        return all_reduce(x)


def test_the_die_that_failed_is_named_not_the_one_it_released(two_dies):
    workers = ThreadWorkers(Tree(two_dies), runner=FailsOnDieOne)
    try:
        for _ in range(2):  # and again, without waiting on the aborted all-reduce
            with pytest.raises(DieFailure, match=r"^die 1 failed; the session cannot go on: "
                                                 r"load the tree again\. (?s:.*)die one broke"):
                workers.step(torch.ones(4))
    finally:
        workers.close()
