"""Tree integrity: a tree's documents are checked against its manifest and each other, nothing
outside the tree is opened or loaded, and `run`, `verify` and `doctor` agree on what is bad."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tyllm import runtime
from tyllm.artifacts.manifest import sha256_file, write_manifest
from tyllm.build_util import build_and_compile_llm
from tyllm.cli import main
from tyllm.errors import ArtifactError
from tyllm.tools.doctor import check_tree
from tyllm.tools.verify import verify_tree


@pytest.fixture(scope="module")
def tree(checkpoint_factory, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("guard-load") / "2die"
    return Path(build_and_compile_llm(checkpoint_factory("qwen3"), out, max_kv_cache_size=16,
                                      seq_len_list=[1, 4], dev_count=2, progress=False))


@pytest.fixture
def copy(tree, tmp_path) -> Path:
    return Path(shutil.copytree(tree, tmp_path / "trees" / "2die"))


def edit_json(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.fixture(scope="module")
def foreign_library(tmp_path_factory) -> tuple[Path, Path]:
    """A shared library whose constructor leaves a mark: loading it would run foreign code."""
    folder = tmp_path_factory.mktemp("foreign")
    mark, source = folder / "constructor-ran", folder / "x.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void mark(void) '
                      f'{{ FILE *f = fopen("{mark}", "w"); if (f) fclose(f); }}\n')
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(folder / "x.so"), str(source)],
                   check=True)
    return folder / "x.so", mark


def point_library_at(copy: Path, name: str, library: Path) -> None:
    """Rewrites die 0's decode library to `name` and lists it in the manifest with its true
    sha256 and size, as an attacker who controls the whole tree would."""
    def change(buffers):
        next(g for g in buffers["graphs"] if g["die"] == 0 and g["seq_len"] == 1)["library"] = name

    edit_json(copy / "buffer_config.json", change)
    manifest = write_manifest(copy)
    entry = {"sha256": sha256_file(library), "size": library.stat().st_size}
    (copy / "manifest.json").write_text(json.dumps(
        manifest | {"files": manifest["files"] | {name: entry}}))


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_library_outside_the_tree_is_never_loaded(copy, foreign_library, where):
    library, mark = foreign_library
    name = str(library) if where == "absolute" else "../../foreign0/x.so"
    shutil.copytree(library.parent, copy.parent.parent / "foreign0", dirs_exist_ok=True)
    point_library_at(copy, name, library)
    for attempt in (lambda: runtime.load(copy), lambda: verify_tree(copy)):
        with pytest.raises(ArtifactError, match=r"not a path inside the tree|outside the tree"):
            attempt()
    assert [f.ok for f in check_tree(copy)] == [False]
    assert main(["run", str(copy), "--prompt", "w1"]) == 2
    assert not mark.exists()


def test_link_inside_the_tree_pointing_outside_is_refused(copy, foreign_library):
    library, mark = foreign_library
    (copy / "batch_1" / "evil.so").symlink_to(library)
    point_library_at(copy, "batch_1/evil.so", library)
    with pytest.raises(ArtifactError, match=r"outside the tree"):
        runtime.load(copy)
    assert not mark.exists()


@pytest.mark.parametrize(("key", "value"), [("eos_token_ids", [5]), ("max_kv_cache_size", 64),
                                            ("vocab_size", 100000)])
def test_edited_config_is_refused_by_its_sha256(copy, key, value):
    edit_json(copy / "config.json", lambda c: c.update({key: value}))
    with pytest.raises(ArtifactError, match=r"config.json does not match its sha256"):
        runtime.load(copy)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("max_kv_cache_size", 64, "max_kv_cache_size=64 but die 0's graphs hold 16 positions"),
    ("vocab_size", 100000, "vocab_size=100000 but the seq_len 1 graphs return 250 logits"),
])
def test_documents_that_disagree_with_the_graphs_are_refused(copy, key, value, message):
    edit_json(copy / "config.json", lambda c: c.update({key: value}))
    write_manifest(copy)  # even with a manifest made to match
    with pytest.raises(ArtifactError, match=message):
        runtime.load(copy)
    assert any(message in f.text for f in check_tree(copy) if not f.ok)


def test_file_not_in_the_manifest_is_refused(copy):
    def change(buffers):
        buffers["graphs"][0]["graph_params"] = "batch_1/unlisted.params"

    shutil.copyfile(copy / "batch_1/seqlen_1/llm_die0.params", copy / "batch_1/unlisted.params")
    edit_json(copy / "buffer_config.json", change)
    write_manifest(copy)
    edit_json(copy / "manifest.json",  # every file listed but the one buffer_config now names
              lambda m: m["files"].pop("batch_1/unlisted.params"))
    with pytest.raises(ArtifactError, match=r"not listed in its manifest.json"):
        runtime.load(copy)


def test_tree_in_a_folder_named_for_other_dies_is_flagged_by_doctor(tree, tmp_path):
    moved = Path(shutil.copytree(tree, tmp_path / "3die"))
    bad = [f.text for f in check_tree(moved) if not f.ok]
    assert len(bad) == 1 and "compiled for 2 dies but 3 were folder name" in bad[0]
    assert main(["doctor", str(moved)]) == 1


def test_manifest_that_is_not_json_is_refused(copy):
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"not a tyllm tree manifest"):
        runtime.load(copy)


def test_tokenizer_file_added_after_the_compile_is_refused(copy):
    (copy / "chat_template.jinja").write_text("{{ 'injected' }}")
    with pytest.raises(ArtifactError, match="added after the compile"):
        runtime.load(copy)


@pytest.mark.parametrize("entry", [{}, "abc"])
def test_damaged_manifest_entries_are_refused(copy, entry):
    edit_json(copy / "manifest.json", lambda m: m["files"].update({"config.json": entry}))
    with pytest.raises(ArtifactError, match="without a sha256 and size"):
        runtime.load(copy)
    assert main(["doctor", str(copy)]) == 1


def relabel(copy: Path, rename: bool) -> None:
    """config.json says onnx_reference, the manifest made to match; `rename`: the libraries
    renamed to that backend's suffix too (their content stays emulated_cpu's)."""
    edit_json(copy / "config.json", lambda c: c.update({"backend": "onnx_reference"}))
    if rename:
        for library in copy.rglob("*.so"):
            library.rename(library.with_suffix(".onnx"))
        text = (copy / "buffer_config.json").read_text()
        (copy / "buffer_config.json").write_text(text.replace(".so\"", ".onnx\""))
    write_manifest(copy)


@pytest.mark.parametrize("rename", [False, True], ids=["relabelled", "relabelled-and-renamed"])
def test_a_tree_relabelled_with_another_backend_is_refused(copy, rename, capsys):
    relabel(copy, rename)
    files = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    message = (r"records the backend 'onnx_reference' but batch_1/seqlen_1/llm_decode_die0"
               r"\.(so|onnx) is an emulated_cpu library: .* recompile the model with --backend "
               r"onnx_reference\.")
    for attempt in (lambda: runtime.load(copy), lambda: verify_tree(copy)):
        with pytest.raises(ArtifactError, match=message):
            attempt()
    bad = [f.text for f in check_tree(copy) if not f.ok]
    assert len(bad) == 1 and "is an emulated_cpu library" in bad[0]
    assert main(["run", str(copy), "--prompt", "w1"]) == 2
    assert "is an emulated_cpu library" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == files


def test_the_folder_above_the_trees_names_them(copy, capsys):
    shutil.copytree(copy, copy.parent / "4die")
    with pytest.raises(ArtifactError, match=r"is not a tree but the folder holding the trees "
                                            r"2die, 4die .* e\.g\. .*/trees/2die\."):
        runtime.load(copy.parent)
    assert main(["run", str(copy.parent), "--prompt", "w1"]) == 2
    assert f"pass the one to run, e.g. {copy}." in capsys.readouterr().err
