"""The artifact tree: layout, schemas, manifest, load-time checks, atomic compile."""

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from tyllm.backends.emulated_cpu import TargetSpec

from tyllm import runtime
from tyllm.build_util import build_and_compile_llm
from tyllm.errors import ArtifactError

SCHEMAS = Path(__file__).parent.parent / "artifacts_schema"


@pytest.fixture(scope="module")
def tree(checkpoint_factory, tmp_path_factory):
    out = tmp_path_factory.mktemp("tree") / "2die"
    return Path(build_and_compile_llm(checkpoint_factory("qwen3"), out, max_kv_cache_size=32,
                                      seq_len_list=[1, 4], dev_count=2, progress=False,
                                      embedding_as_input=True))


def test_seed_layout(tree):
    batch = tree / "batch_1"
    for d in range(2):
        assert (batch / f"common_die{d}.params").is_file()
        assert (batch / f"seqlen_1/llm_decode_die{d}.so").is_file()
        assert (batch / f"seqlen_4/llm_prefill_die{d}.so").is_file()
        for m in (1, 4):
            assert (batch / f"constant_die{d}_{m}.params").is_file()
            assert (batch / f"seqlen_{m}/llm_die{d}.params").is_file()
            assert (batch / f"llm_die{d}_{m}.onnx").is_file()
    for name in ("config.json", "buffer_config.json", "tokenizer.json", "embedding.params",
                 "manifest.json", "empty.bin"):
        assert (tree / name).is_file(), name


def test_weights_are_stored_once_per_die(tree):
    from safetensors import safe_open

    with safe_open(tree / "batch_1/common_die0.params", "pt") as f:
        weights = set(f.keys())
    assert "layers.0.mlp.up_proj.weight" in weights
    for m in (1, 4):
        for name in (f"constant_die0_{m}.params", f"seqlen_{m}/llm_die0.params"):
            with safe_open(tree / "batch_1" / name, "pt") as f:
                assert not weights & set(f.keys())


@pytest.mark.parametrize("name", ["config", "buffer_config", "manifest", "compile_report"])
def test_json_documents_match_their_schemas(tree, name):
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.validate(json.loads((tree / f"{name}.json").read_text()), schema)


def test_manifest_records_versions_and_every_file(tree):
    manifest = json.loads((tree / "manifest.json").read_text())
    assert {"tyllm", "torch", "apache-tvm"} <= set(manifest["producer"])
    on_disk = {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {"manifest.json"}


def test_buffer_config_describes_graphs_and_kv(tree):
    buffers = json.loads((tree / "buffer_config.json").read_text())
    graph = next(g for g in buffers["graphs"] if g["die"] == 1 and g["seq_len"] == 4)
    assert [t["name"] for t in graph["inputs"]] == ["inputs_embeds", "start_pos", "last_index",
                                                   "k_cache", "v_cache", "history_mask"]
    assert graph["window"] == 32 and graph["inputs"][-1]["shape"] == [32]  # KV 32: one window
    assert graph["inputs"][0]["shape"] == [4, 48]
    kv = buffers["kv_cache"][1]["k_cache"]
    assert kv["shape"] == [2, 1, 32, 8]  # layers, this die's KV heads, max_kv, head_dim


def test_tree_for_other_die_count_is_refused(tree):
    with pytest.raises(ArtifactError, match="compiled for 2 dies but 3 were requested"):
        runtime.load(tree, dies=3)


def corrupt_copy(tree: Path, tmp_path: Path, name: str, how) -> Path:
    import shutil

    copy = tmp_path / "2die"
    shutil.copytree(tree, copy)
    how(copy / name)
    return copy


@pytest.mark.parametrize("name", ["batch_1/common_die1.params",
                                  "batch_1/seqlen_1/llm_decode_die0.so"])
def test_truncated_files_are_caught_by_sha256(tree, tmp_path, name):
    def truncate(path):
        path.write_bytes(path.read_bytes()[:-100])

    with pytest.raises(ArtifactError, match="does not match its sha256"):
        runtime.load(corrupt_copy(tree, tmp_path, name, truncate))


def test_failed_compile_leaves_no_tree_and_rerun_works(checkpoint_factory, tmp_path,
                                                       monkeypatch):
    out = tmp_path / "1die"
    ckpt = checkpoint_factory("qwen3")
    real = TargetSpec.lower_windows
    calls = []

    def fail_on_second_graph(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(TargetSpec, "lower_windows", fail_on_second_graph)
    kwargs = dict(max_kv_cache_size=32, seq_len_list=[1, 4], progress=False, export_onnx=False,
                  use_cache=False, jobs=1)  # in this process, where the failure is patched in
    with pytest.raises(KeyboardInterrupt):
        build_and_compile_llm(ckpt, out, **kwargs)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(TargetSpec, "lower_windows", real)
    build_and_compile_llm(ckpt, out, **kwargs)
    assert (out / "manifest.json").is_file()
    build_and_compile_llm(ckpt, out, **kwargs)  # recompiling over a tree replaces it
    with runtime.load(out) as session:
        assert len(session.generate([1, 2, 3], max_new_tokens=3)) == 3


def test_prompt_longer_than_kv_cache_is_refused(tree):
    from tyllm.errors import TyllmError

    with runtime.load(tree) as session:
        with pytest.raises(TyllmError, match="KV cache holds 32"):
            session.generate(list(range(40)), max_new_tokens=1)
        with pytest.raises(TyllmError, match="ask for at most 3 new tokens"):
            session.generate(list(range(30)), max_new_tokens=10)


def test_dies_of_an_even_split_share_one_program(tree):
    """Both dies of the 2-die tree run the same program: compiled once per seq_len, the second
    die's library is the same file and its ONNX twin reads its own weights."""
    import onnx

    for m, kind in ((1, "decode"), (4, "prefill")):
        libraries = [tree / f"batch_1/seqlen_{m}/llm_{kind}_die{d}.so" for d in range(2)]
        assert libraries[0].read_bytes() == libraries[1].read_bytes()
        twin = onnx.load(str(tree / f"batch_1/llm_die1_{m}.onnx"), load_external_data=False)
        locations = {e.value for t in twin.graph.initializer for e in t.external_data
                     if e.key == "location"}
        assert locations == {"common_die1.params"}
    report = json.loads((tree / "compile_report.json").read_text())
    shared = {(g["die"], g["seq_len"]) for g in report["graphs"] if "shared" in g["seconds"]}
    assert shared == {(1, 1), (1, 4)}


def test_uneven_split_compiles_each_distinct_program(checkpoint_factory, tmp_path):
    """6 query heads (2 KV heads, 3 queries each) on 4 dies: die 0 reads KV head 0 twice, die 1
    KV heads 0 and 1 once each, dies 2 and 3 one query on one KV head: three programs."""
    out = Path(build_and_compile_llm(checkpoint_factory("qwen3"), tmp_path / "4die",
                                     max_kv_cache_size=16, seq_len_list=[1], dev_count=4,
                                     export_onnx=False, progress=False))
    report = json.loads((out / "compile_report.json").read_text())
    compiled = sorted(g["die"] for g in report["graphs"] if "shared" not in g["seconds"])
    assert compiled == [0, 1, 2]
    with runtime.load(out) as session:
        assert len(session.generate([5, 6, 7], max_new_tokens=3, stop_at_eos=False)) == 3


def test_params_read_into_one_buffer_keep_their_values_and_alignment(tmp_path):
    from tyllm.artifacts.params import load_params, save_params

    tensors = {"a": torch.randn(3, 5), "b": torch.arange(7, dtype=torch.int64),
               "c": torch.randn(1 << 20, dtype=torch.float16),
               "d": torch.ones(3, dtype=torch.uint8)}
    save_params(tmp_path / "x.params", tensors)
    loaded = load_params(tmp_path / "x.params")
    for name, t in tensors.items():
        assert torch.equal(loaded[name], t), name
        assert loaded[name].data_ptr() % 64 == 0, name
    loaded["a"].add_(1)  # each tensor is its own slice: writing one leaves its neighbours
    assert torch.equal(loaded["b"], tensors["b"]) and torch.equal(loaded["c"], tensors["c"])


def test_huge_page_zeros_are_zeros_of_the_shape():
    from tyllm.artifacts.huge_pages import huge_page_zeros

    cache = huge_page_zeros((2, 3, 1 << 18, 4), torch.float16)
    assert cache.shape == (2, 3, 1 << 18, 4) and cache.dtype == torch.float16
    assert cache.is_contiguous() and not cache.any()
