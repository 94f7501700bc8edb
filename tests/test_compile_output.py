"""What a compile shows a user: one progress bar and a final line; framework output and
per-graph timings in the tree's compile.log (named in the final line and in any error)."""

import json
import subprocess

import pytest
from tyllm.backends.emulated_cpu import TargetSpec

from tyllm.build_util import build_and_compile_llm
from tyllm.errors import TyllmError


def compile_cli(ckpt, out, *extra):
    return subprocess.run(["tyllm", "compile", str(ckpt), str(out), "--seq-lens", "1,4",
                           "--max-kv", "32", "--no-onnx", "--no-cache", *extra],
                          capture_output=True, check=True)  # bytes: text mode turns \r into \n


def test_compile_prints_a_bar_and_a_final_line_and_logs_the_rest(checkpoint_factory, tmp_path):
    out = tmp_path / "1die"
    stderr = compile_cli(checkpoint_factory("qwen2"), out).stderr.decode()
    lines = stderr.strip().split("\n")  # the bar rewrites its line with \r
    assert len(lines) <= 3, lines  # bar updates share one line (carriage returns)
    assert "compile [2/2] die 0 seqlen 4 (prefill)" in stderr
    assert lines[-1].startswith(f"compiled 2 graphs into {out}")
    assert lines[-1].endswith(f"log: {out / 'compile.log'}")
    assert "Warning" not in stderr
    log = (out / "compile.log").read_text()
    assert "Fast mode segfaults" in log  # TVM's C++ warnings
    assert "[1/2] die 0 seqlen 1 (decode): export" in log
    assert "compile.log" in json.loads((out / "manifest.json").read_text())["files"]


def test_verbose_shows_framework_output_live(checkpoint_factory, tmp_path):
    result = compile_cli(checkpoint_factory("qwen2"), tmp_path / "1die", "--verbose")
    assert b"Fast mode segfaults" in result.stderr


def test_failed_compile_names_its_kept_log(checkpoint_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("TYLLM_CACHE", str(tmp_path / "cache"))

    def refuse(*args, **kwargs):
        raise TyllmError("The backend refused the graph.")

    monkeypatch.setattr(TargetSpec, "lower_windows", refuse)
    with pytest.raises(TyllmError, match=r"refused the graph\. The compile log is .*\.log") as e:
        build_and_compile_llm(checkpoint_factory("qwen2"), tmp_path / "1die",
                              max_kv_cache_size=32, seq_len_list=[1], export_onnx=False,
                              use_cache=False)
    kept = str(e.value).rsplit("The compile log is ", 1)[1].rstrip(".")
    assert kept.startswith(str(tmp_path / "cache" / "logs"))
    assert not (tmp_path / "1die").exists()
    assert list(tmp_path.glob(".1die.partial-*")) == []
