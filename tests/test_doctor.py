import json
import shutil

import pytest

from tyllm.build_util import build_and_compile_llm
from tyllm.cli import main
from tyllm.tools.doctor import check_tree, run_doctor


def test_this_installation_is_sound():
    findings = run_doctor()
    assert all(f.ok for f in findings), [f.line() for f in findings if not f.ok]
    text = "\n".join(f.line() for f in findings)
    for name in ("tyllm", "torch", "apache-tvm", "onnx", "onnxruntime", "transformers"):
        assert name in text
    assert "TVM compiles" in text


@pytest.fixture(scope="module")
def tree(checkpoint_factory, tmp_path_factory):
    out = tmp_path_factory.mktemp("doctor") / "1die"
    return build_and_compile_llm(checkpoint_factory("llama"), out, max_kv_cache_size=16,
                                 seq_len_list=[1], export_onnx=False, progress=False)


def test_tree_made_by_another_tvm_is_flagged(tree, tmp_path, capsys):
    copy = tmp_path / "1die"
    shutil.copytree(tree, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["producer"]["apache-tvm"] = "0.26.0"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bad = [f.text for f in check_tree(copy) if not f.ok]
    assert bad == ["tree made with apache-tvm 0.26.0, installed 0.27.0.post1: recompile the tree"]
    assert main(["doctor", str(copy)]) == 1
    assert "FAIL tree made with apache-tvm 0.26.0" in capsys.readouterr().out


def test_corrupted_tree_is_flagged(tree, tmp_path):
    copy = tmp_path / "1die"
    shutil.copytree(tree, copy)
    (copy / "config.json").write_text("{}")
    assert any("does not match its sha256" in f.text for f in check_tree(copy) if not f.ok)
    assert main(["doctor", str(tree)]) == 0
