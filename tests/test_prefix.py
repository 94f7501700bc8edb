"""Kept prefixes (`Session.keep_prefix`) and `tyllm run --chat`: a prompt that starts with a
kept prefix reuses its KV, computes only the rest, and gives the same greedy tokens."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tyllm import runtime
from tyllm.build_util import build_and_compile_llm
from tyllm.errors import TyllmError
from tyllm.runtime.chat import chat

pytestmark = pytest.mark.slow
PROMPT = list(range(3, 43))  # 40 tokens; windows 16 and 64
TEMPLATE = ("{% for m in messages %}{{ 'w3' if m['role'] == 'assistant' else 'w1' }} "
            "{{ m['content'] }} w2 {% endfor %}{% if add_generation_prompt %}w3{% endif %}")


@pytest.fixture(scope="module")
def tree(checkpoint_factory, tmp_path_factory) -> Path:
    """A 2-die Qwen3 whose word tokenizer has a chat template."""
    from transformers import PreTrainedTokenizerFast

    source = tmp_path_factory.mktemp("prefix-ckpt") / "qwen3"
    shutil.copytree(checkpoint_factory("qwen3", seed=4), source)  # the shared one stays as is
    tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(source)
    out = tmp_path_factory.mktemp("prefix-tree") / "2die"
    return Path(build_and_compile_llm(source, out, max_kv_cache_size=64, seq_len_list=[1, 8],
                                      dev_count=2, export_onnx=False, progress=False,
                                      kv_windows=(16,)))


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_a_kept_prefix_gives_the_same_tokens(tree, workers):
    """Prefixes ending mid-window, exactly at a window boundary, and covering the whole prompt
    but one token, and the whole prompt."""
    with runtime.load(tree, workers=workers) as session:
        expected = session.generate(PROMPT, 8, stop_at_eos=False)
        for cut in (10, 16, 39, 40):
            prefix = session.keep_prefix(PROMPT[:cut])
            assert session.generate(PROMPT, 8, stop_at_eos=False, prefix=prefix) == expected
            session.drop_prefix(prefix)


def test_only_the_rest_of_the_prompt_is_computed(tree, monkeypatch):
    with runtime.load(tree) as session:
        prefix = session.keep_prefix(PROMPT[:32])
        computed = []
        extend = session.extend
        monkeypatch.setattr(session, "extend", lambda tokens, start, slot: (
            computed.append((start, len(tokens))), extend(tokens, start, slot))[1])
        session.generate(PROMPT, 2, stop_at_eos=False, prefix=prefix)
        assert computed == [(32, 8)]
        with pytest.raises(TyllmError, match="does not start with the kept prefix"):
            session.generate([9, *PROMPT[1:]], 2, prefix=prefix)


def test_a_prefix_longer_than_the_cache_is_refused(tree):
    with runtime.load(tree) as session, pytest.raises(TyllmError, match="KV cache holds 64"):
        session.keep_prefix(list(range(3, 3 + 65)))


def test_a_finished_turn_is_kept_without_recomputing(tree):
    with runtime.load(tree) as session:
        out = session.generate(PROMPT[:20], 6, stop_at_eos=False)
        conversation = session.keep_prefix(PROMPT[:20] + out[:-1], from_slot=0)
        follow = PROMPT[:20] + out + [5, 6, 7]
        expected = session.generate(follow, 4, stop_at_eos=False)
        assert session.generate(follow, 4, stop_at_eos=False, prefix=conversation) == expected


def test_chat_turns_reuse_the_conversation(tree, monkeypatch):
    lines = iter(["w5 w6 w7", "w8 w9", None])
    answers: list[str] = []
    with runtime.load(tree) as session:
        computed = []
        extend = session.extend
        monkeypatch.setattr(session, "extend", lambda tokens, start, slot: (
            computed.append((start, len(tokens))), extend(tokens, start, slot))[1])
        assert chat(session, lambda: next(lines), answers.append, 4) == 2
        second_start = computed[-1][0]
    assert len(answers) == 2 and second_start > 0  # turn 2 began after turn 1's tokens
    command = [sys.executable, "-m", "tyllm.cli", "run", str(tree), "--chat",
               "--max-new-tokens", "4"]
    run = subprocess.run(command, input="w5 w6 w7\nw8 w9\n", capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == answers


def test_run_needs_a_prompt_or_chat(tree):
    run = subprocess.run([sys.executable, "-m", "tyllm.cli", "run", str(tree)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--chat" in run.stderr
