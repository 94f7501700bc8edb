"""The engine's tree options and `tyllm serve` arguments, without starting an engine."""

from pathlib import Path
from types import SimpleNamespace

import pytest

from tyllm.cli import main
from tyllm.errors import TyllmError


def vllm_config(model, options=None, tp=2, max_len=128, max_num_seqs=8):
    return SimpleNamespace(
        additional_config={"tyllm": options} if options is not None else None,
        model_config=SimpleNamespace(model=str(model), max_model_len=max_len),
        parallel_config=SimpleNamespace(tensor_parallel_size=tp),
        scheduler_config=SimpleNamespace(max_num_seqs=max_num_seqs))


def test_default_tree_is_keyed_by_checkpoint_and_engine_shape(checkpoint_factory, tmp_path,
                                                              monkeypatch):
    from tyllm.vllm_ext.artifacts import engine_tree

    monkeypatch.setenv("TYLLM_CACHE", str(tmp_path))
    model = checkpoint_factory("qwen3")
    want = engine_tree(vllm_config(model))
    assert want.artifacts_path.parent.parent == tmp_path / "engines"
    assert want.artifacts_path.name == "2die"
    assert (want.dies, want.max_kv, want.seq_lens, want.workers) == (2, 128, (1, 8), "threads")
    other = engine_tree(vllm_config(model, max_len=256))
    assert other.artifacts_path != want.artifacts_path
    assert engine_tree(vllm_config(model)).artifacts_path == want.artifacts_path


def test_unknown_tyllm_option_and_bad_workers_are_named(tmp_path):
    from tyllm.vllm_ext.artifacts import engine_tree

    with pytest.raises(TyllmError, match="artifact_path"):
        engine_tree(vllm_config(tmp_path, {"artifact_path": "x"}))
    with pytest.raises(TyllmError, match="workers"):
        engine_tree(vllm_config(tmp_path, {"artifacts_path": "x", "workers": "gpus"}))


def test_engine_batch_sizes_cover_max_num_seqs_unless_named(checkpoint_factory, tmp_path,
                                                            monkeypatch):
    from tyllm.vllm_ext.artifacts import engine_tree

    monkeypatch.setenv("TYLLM_CACHE", str(tmp_path))
    model = checkpoint_factory("qwen3")
    assert engine_tree(vllm_config(model)).batch_sizes == (1, 2, 4, 8)
    named = engine_tree(vllm_config(model, {"batch_sizes": [2]}))
    assert (named.batch_sizes, named.named_batches) == ((1, 2), True)
    assert named.artifacts_path != engine_tree(vllm_config(model)).artifacts_path
    with pytest.raises(TyllmError, match="batch_size_list"):
        engine_tree(vllm_config(model, {"batch_sizes": 4}))


def test_vlm_checkpoint_options_shape_its_tree(vlm_checkpoint, checkpoint_factory, tmp_path,
                                              monkeypatch):
    from tyllm.vllm_ext.artifacts import engine_tree, mismatches

    monkeypatch.setenv("TYLLM_CACHE", str(tmp_path))
    model = vlm_checkpoint("qwen2_5_vl")
    want = engine_tree(vllm_config(model, {"image_sizes": "56x84,112x84", "prefill_lens": [16],
                                           "batch_sizes": [1]}))
    assert want.vision.image_sizes == ((56, 84), (112, 84))
    assert want.seq_lens == (1, 8, 16)
    default = engine_tree(vllm_config(model, {"batch_sizes": [1]}))
    assert default.vision.image_sizes == ((448, 448),)
    assert default.artifacts_path != want.artifacts_path
    tree = {"dies": 2, "max_kv_cache_size": 128, "seq_len_list": [1, 8, 16],
            "modalities": ["image"], "vision": {"sizes": [{"size": [56, 84]}]}}
    assert mismatches(want, tree) == ["image_sizes engine=[(56, 84), (112, 84)] tree=[(56, 84)]"]
    with pytest.raises(TyllmError, match=r"image_sizes.*remove them"):
        engine_tree(vllm_config(checkpoint_factory("qwen3"), {"image_sizes": "56x84"}))
    with pytest.raises(TyllmError, match="HEIGHTxWIDTH"):
        engine_tree(vllm_config(model, {"image_sizes": ["56 by 84"]}))


def test_serve_refuses_a_vlm_checkpoint_without_image_sizes(vlm_checkpoint, capsys):
    assert main(["serve", str(vlm_checkpoint("qwen2_5_vl")), "--port", "1"]) == 2
    assert "--image-sizes" in capsys.readouterr().err


def test_serve_refuses_a_missing_model(capsys):
    assert main(["serve", "/no/such/model"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_serve_help_names_tyllm_flags(capsys):
    assert main(["serve", "--help"]) == 0
    assert "--artifacts-path" in capsys.readouterr().out


def test_tree_engine_kwargs_come_from_the_tree(checkpoint_factory, tmp_path, monkeypatch):
    import json

    from tyllm.build_util import build_and_compile_llm
    from tyllm.vllm_ext.serve import engine_argv

    tree = tmp_path / "3die"
    build_and_compile_llm(checkpoint_factory("llama"), tree, max_kv_cache_size=40,
                          seq_len_list=[1, 8], dev_count=3, export_onnx=False, progress=False)
    monkeypatch.setenv("TYLLM_CACHE", str(tmp_path / "cache"))
    argv, options = engine_argv(tree, {"workers": "processes"}, ["--port", "9"])
    folder = Path(argv[argv.index("--model") + 1])
    assert folder.parent == tmp_path / "cache" / "served"
    served = json.loads((folder / "config.json").read_text())
    assert served["model_type"] == "llama" and served["hidden_size"] == 48
    assert (folder / "tokenizer.json").read_bytes() == (tree / "tokenizer.json").read_bytes()
    assert argv[argv.index("--tensor-parallel-size") + 1] == "3"
    assert argv[argv.index("--max-model-len") + 1] == "40"
    assert argv[-2:] == ["--port", "9"]
    assert options == {"artifacts_path": str(tree), "seq_len_list": [1, 8],
                       "workers": "processes"}
