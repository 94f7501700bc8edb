"""The `tyllm` console script: compile, run, verify, and their help."""

import subprocess

import pytest


def tyllm(*args, check=True):
    return subprocess.run(["tyllm", *map(str, args)], capture_output=True, text=True,
                          check=check, timeout=900)


@pytest.mark.parametrize("command", ["compile", "run", "verify"])
def test_help(command):
    assert "usage: tyllm " + command in tyllm(command, "--help").stdout


@pytest.mark.slow
def test_compile_run_verify(checkpoint_factory, tmp_path):
    ckpt = checkpoint_factory("llama")
    out = tmp_path / "2die"
    compiled = tyllm("compile", ckpt, out, "--dies", 2, "--seq-lens", "1,4", "--max-kv", 48)
    assert "[4/4] die 1 seqlen 4 (prefill)" in compiled.stderr  # one progress line per graph
    assert "peak RSS" in compiled.stderr
    answer = tyllm("run", out, "--raw", "--prompt", "w5 w9 w13 w2 w77", "--max-new-tokens", 6)
    assert len(answer.stdout.split()) == 6
    verified = tyllm("verify", out)
    assert "4/4 graphs agree" in verified.stdout
    wrong = tyllm("run", out, "--dies", 3, "--prompt", "w1", check=False)
    assert wrong.returncode == 2 and "compiled for 2 dies" in wrong.stderr
