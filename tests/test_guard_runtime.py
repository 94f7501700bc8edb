"""Runtime inputs: what a caller passes to a session ends in one TyllmError, never a TypeError,
a silent truncation or a die process killed without a reason."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tyllm import runtime
from tyllm.build_util import build_and_compile_llm
from tyllm.errors import TyllmError


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
