"""Speculative decoding on the dies (tyllm.speculate): verify graphs score every row, and
n-gram or draft-model speculation gives the plain greedy tokens, in fewer target steps when
the guesses are right."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch
from models import SPECULATIVE_TOKENS

from tyllm import runtime
from tyllm.build_util import build_and_compile_llm
from tyllm.errors import TyllmError
from tyllm.speculate import DraftModel, Ngram

pytestmark = pytest.mark.slow
K = SPECULATIVE_TOKENS
# a copy task: the prompt holds a passage twice, the model is asked to go on
PASSAGE = [17, 40, 93, 5, 61, 122, 8, 77, 200, 31, 64, 9, 150, 42, 88, 19]
PROMPT = [3, *PASSAGE, 4, *PASSAGE, 4, *PASSAGE[:3]]


def compile_tree(source: Path, out: Path, dies: int, **extra) -> Path:
    return Path(build_and_compile_llm(source, out, max_kv_cache_size=128, seq_len_list=[1, 8],
                                      dev_count=dies, export_onnx=False, progress=False,
                                      kv_windows=(32,), **extra))


@pytest.fixture(scope="module")
def tree(spec_tree) -> Path:
    """A 2-die Qwen3 with verify graphs for K tokens at batch sizes 1 and 2 (conftest.py)."""
    return spec_tree[1]


@pytest.fixture(scope="module")
def draft(spec_draft) -> Path:
    """Another random Qwen3 with the same vocabulary (its guesses are mostly wrong), no
    verify graphs (conftest.py)."""
    return spec_draft


def test_verify_graphs_are_in_the_layout_and_the_schemas(tree):
    suffix = next((tree / "batch_1" / "seqlen_1").glob("llm_decode*_die0.*")).suffix
    for batch in (1, 2):
        for die in (0, 1):
            for tag in ("_kv32", ""):
                name = f"batch_{batch}/seqlen_{K + 1}/llm_verify{tag}_die{die}{suffix}"
                assert (tree / name).is_file(), name
    config = json.loads((tree / "config.json").read_text())
    assert config["speculative_tokens"] == K
    schemas = Path(__file__).parent.parent / "artifacts_schema"
    for name in ("config", "buffer_config", "manifest", "compile_report"):
        schema = json.loads((schemas / f"{name}.schema.json").read_text())
        jsonschema.validate(json.loads((tree / f"{name}.json").read_text()), schema)


def counted_verify(session, monkeypatch) -> list[int]:
    """Records the rows of every verify call."""
    calls: list[int] = []
    verify = session.verify_rows

    def counting(rows, starts, slots):
        calls.append(sum(len(r) for r in rows))
        return verify(rows, starts, slots)

    monkeypatch.setattr(session, "verify_rows", counting)
    return calls


def test_verify_rows_score_every_row_like_decode_steps(tree):
    tokens = PROMPT[:12]
    with runtime.load(tree) as session:
        session.extend(tokens[:8], 0, slot=0)
        stepped = torch.stack([session.extend([t], 8 + i, slot=0)
                               for i, t in enumerate(tokens[8:])])
        session.extend(tokens[:8], 0, slot=1)
        verified, other = session.verify_rows([tokens[8:], tokens[:3]], [8, 0], [1, 2])
    assert verified.shape == stepped.shape and other.shape[0] == 3
    torch.testing.assert_close(verified, stepped, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_ngram_gives_the_greedy_tokens_in_fewer_steps(tree, workers, monkeypatch):
    with runtime.load(tree, workers=workers) as session:
        expected = session.generate(PROMPT, 24, stop_at_eos=False)
        calls = counted_verify(session, monkeypatch)
        got = session.generate(PROMPT, 24, stop_at_eos=False, speculative=Ngram(lookup_min=2))
    assert got == expected
    assert calls, "the copy-heavy prompt gave n-gram proposals"


def test_the_target_as_its_own_draft_has_every_guess_accepted(tree, monkeypatch):
    with runtime.load(tree) as session, runtime.load(tree) as same:
        expected = session.generate(PROMPT, 21, stop_at_eos=False)
        calls = counted_verify(session, monkeypatch)
        got = session.generate(PROMPT, 21, stop_at_eos=False, speculative=DraftModel(same))
    assert got == expected
    assert calls == [K + 1] * 4  # 1 token from the prefill, then K + 1 per step


def test_a_random_draft_is_rejected_but_the_tokens_stay(tree, draft):
    with runtime.load(tree) as session, runtime.load(draft) as guesser:
        expected = session.generate(PROMPT, 16, stop_at_eos=False)
        for k in (1, K):
            got = session.generate(PROMPT, 16, stop_at_eos=False,
                                   speculative=DraftModel(guesser, tokens=k))
            assert got == expected


def test_speculation_is_refused_clearly(tree, draft, checkpoint_factory, tmp_path):
    other = compile_tree(checkpoint_factory("qwen3", seed=9, vocab_size=300),
                         tmp_path / "1die", 1)
    with runtime.load(tree) as session, runtime.load(draft) as plain, \
            runtime.load(other) as wide:
        with pytest.raises(TyllmError, match=r"no verify graphs.*--speculative-tokens"):
            plain.generate(PROMPT, 4, speculative=Ngram())
        with pytest.raises(TyllmError, match=rf"at most {K}.*speculative_tokens=6"):
            session.generate(PROMPT, 4, speculative=Ngram(tokens=6))
        with pytest.raises(TyllmError, match=r"vocabulary of 300.*250"):
            session.generate(PROMPT, 4, speculative=DraftModel(wide))
        with pytest.raises(TyllmError, match="1 to 5 tokens"):
            session.verify_rows([PROMPT[:6]], [0], [0])


def test_run_speculates_with_the_same_output(tree, draft):
    text = " ".join(f"w{t}" for t in PROMPT)
    command = [sys.executable, "-m", "tyllm.cli", "run", str(tree), "--raw", "--prompt", text,
               "--max-new-tokens", "12"]
    outputs = [subprocess.run(command + extra, capture_output=True, text=True)
               for extra in ([], ["--speculate", "ngram"],
                             ["--speculate", str(draft), "--speculative-tokens", "2"])]
    assert all(o.returncode == 0 for o in outputs), [o.stderr[-2000:] for o in outputs]
    assert outputs[0].stdout.strip() and len({o.stdout for o in outputs}) == 1
