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
        scheduler_config=SimpleNamespace(max_num_seqs=max_num_seqs), speculative_config=None)


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


@pytest.fixture(scope="module")
def tree(checkpoint_factory, tmp_path_factory) -> Path:
    """A tiny llama tree: 3 dies, KV 40, seq lens [1, 8], batch 1."""
    from tyllm.build_util import build_and_compile_llm

    out = tmp_path_factory.mktemp("tiny-tree") / "3die"
    build_and_compile_llm(checkpoint_factory("llama"), out, max_kv_cache_size=40,
                          seq_len_list=[1, 8], dev_count=3, export_onnx=False, progress=False)
    return out


def test_tree_engine_kwargs_come_from_the_tree(tree, tmp_path, monkeypatch):
    import json

    from tyllm.vllm_ext.serve import engine_argv

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


@pytest.mark.parametrize(("flags", "phrase"), [
    (["--max-model-len", "512"], "--max-model-len 512 contradicts the tree {tree}, compiled for "
                                 "--max-model-len 40: drop the flag"),
    (["-tp", "2"], "--tensor-parallel-size 2 contradicts the tree {tree}, compiled for "
                   "--tensor-parallel-size 3"),
    (["--tensor-parallel-size=4", "--seq-len-list", "1,16"],
     "--tensor-parallel-size 4 --seq-len-list 1,16 contradict the tree {tree}, compiled for "
     "--tensor-parallel-size 3 --seq-len-list 1,8: drop these flags"),
    (["--artifacts-path", "/elsewhere/3die"], "--artifacts-path /elsewhere/3die names another "
                                              "folder than the tree {tree}")])
def test_serve_refuses_flags_that_contradict_the_tree(tree, flags, phrase, capsys):
    """Refused before vLLM is imported, in one line that names both values and the fix."""
    assert main(["serve", str(tree), *flags, "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and phrase.format(tree=tree) in err


def test_serve_takes_the_trees_values_for_omitted_flags_once(tree):
    from tyllm.vllm_ext.serve import engine_argv

    argv, _ = engine_argv(tree, {"workers": "threads"}, ["--max-model-len", "40"])
    assert argv.count("--max-model-len") == 1  # typed, equal to the tree's: not repeated
    assert argv[argv.index("--tensor-parallel-size") + 1] == "3"


def test_serve_with_a_contradicting_flag_exits_fast_with_one_line(tree):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "tyllm.cli", "serve", str(tree),
                           "--max-model-len", "512"], capture_output=True, text=True, timeout=120)
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and not done.stdout and len(lines) == 1
    assert lines[0].startswith(f"tyllm: error: --max-model-len 512 contradicts the tree {tree}")


@pytest.mark.parametrize(("name", "value", "phrase"), [
    ("max_model_len", 64, "compiled for max_model_len=40, not the max_model_len=64 this engine"),
    ("tensor_parallel_size", 2, "compiled for tensor_parallel_size=3, not the "
                                "tensor_parallel_size=2"),
    ("seq_len_list", [1, 16], "compiled for tyllm.seq_len_list=[1, 8], not the "
                              "tyllm.seq_len_list=[1, 16]")])
def test_an_engine_on_a_contradicting_tree_is_refused_in_tyllms_words(tree, name, value, phrase):
    """vLLM checks its config in a pydantic validator: the error is no ValueError, so pydantic
    passes it on unwrapped and its message is the first line the user reads."""
    from vllm.engine.arg_utils import EngineArgs

    from tyllm.vllm_ext.tree_check import EngineConfigError
    from tyllm.vllm_ext.tree_model import engine_kwargs

    kwargs = engine_kwargs(tree)
    if name == "seq_len_list":
        kwargs["additional_config"]["tyllm"][name] = value
    else:
        kwargs[name] = value
    with pytest.raises(EngineConfigError) as error:
        EngineArgs(**kwargs, dtype="float32").create_engine_config()
    first = str(error.value).splitlines()[0]
    assert first.startswith(f"The tree at {tree} was compiled for") and phrase in first
    assert "pass the tree's values" in first and (tree / "manifest.json").is_file()


def test_speculation_on_a_tree_without_verify_graphs_is_refused(tree):
    from vllm.engine.arg_utils import EngineArgs

    from tyllm.vllm_ext.tree_check import EngineConfigError
    from tyllm.vllm_ext.tree_model import engine_kwargs

    ngram = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}
    with pytest.raises(EngineConfigError, match=r"compiled for speculative_config\."
                                                r"num_speculative_tokens=0, not the"):
        EngineArgs(**engine_kwargs(tree), dtype="float32",
                   speculative_config=ngram).create_engine_config()


def test_an_engine_on_a_tree_without_max_model_len_takes_the_trees(tree):
    """vLLM's default would be the checkpoint's context (512), more than the tree's KV (40)."""
    from vllm.engine.arg_utils import EngineArgs

    from tyllm.vllm_ext.tree_model import engine_kwargs

    kwargs = engine_kwargs(tree)
    del kwargs["max_model_len"]
    config = EngineArgs(**kwargs, dtype="float32").create_engine_config()
    assert config.model_config.max_model_len == 40


@pytest.mark.parametrize("max_num_seqs", [1, 2, 4])
@pytest.mark.parametrize("max_len", [40, 300])
def test_the_slots_hold_full_length_sequences_in_vllms_blocks(tree, checkpoint_factory,
                                                              max_num_seqs, max_len):
    """vLLM's own KV accounting (the engine start's check) on the memory the worker reports:
    max_num_seqs sequences of max_model_len tokens fit, one sequence included."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.attention.backends.utils import resolve_kv_cache_layout
    from vllm.v1.core.kv_cache_utils import get_kv_cache_configs

    from tyllm.runtime.tree import Tree
    from tyllm.vllm_ext.edgex_executor import kv_cache_spec, slot_memory

    config = EngineArgs(model=str(checkpoint_factory("llama")), max_model_len=max_len,
                        max_num_seqs=max_num_seqs, dtype="float32").create_engine_config()
    block = config.cache_config.block_size
    specs = kv_cache_spec(Tree(tree), block)
    resolve_kv_cache_layout(config, [["LBNHC"]], specs.values())
    kv = get_kv_cache_configs(config, [specs], [slot_memory(Tree(tree), config)])[0]
    assert kv.num_blocks - 1 == -(-max_len // block) * max_num_seqs  # less vLLM's null block


def test_a_prompt_that_fills_the_context_is_named_as_such(tree):
    """vLLM's OpenAI server computes max_tokens = context - prompt: at a full context the
    platform says so instead of vLLM's "max_tokens must be at least 1, got 0"."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.serve.utils.api_utils import get_max_tokens
    from vllm.exceptions import VLLMValidationError

    from tyllm.vllm_ext.tree_model import engine_kwargs

    EngineArgs(**engine_kwargs(tree), dtype="float32").create_engine_config()
    assert get_max_tokens(40, 5, 39, {}) == 1
    with pytest.raises(VLLMValidationError, match="The prompt is 40 tokens long and fills the "
                                                  "whole context of 40 tokens"):
        get_max_tokens(40, 5, 40, {})


def test_distributed_serve_gives_the_engine_a_shutdown_grace_unless_told():
    """vLLM's --shutdown-timeout 0 kills the engine before rank 0 can stop the other ranks."""
    from tyllm.vllm_ext.serve import DISTRIBUTED_SHUTDOWN_S, with_shutdown_grace

    assert with_shutdown_grace(["--port", "9"]) == [
        "--port", "9", "--shutdown-timeout", str(DISTRIBUTED_SHUTDOWN_S)]
    for told in (["--shutdown-timeout", "3"], ["--shutdown_timeout=0"]):
        assert with_shutdown_grace(told) == told
