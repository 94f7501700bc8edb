"""Compile destinations and checkpoint inputs: every bad one ends in one TyllmError naming the
fix, before any work, and the user's files stay byte-identical."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tyllm.build_util import build_and_compile_llm, build_and_compile_vlm
from tyllm.errors import TyllmError


def compile_(ckpt, out, **kwargs):
    args = dict(max_kv_cache_size=16, seq_len_list=[1], dev_count=1, export_onnx=False,
                progress=False) | kwargs
    return Path(build_and_compile_llm(ckpt, out, **args))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A folder of the user's own that happens to hold a manifest.json (a web app)."""
    folder = tmp_path / "webapp"
    (folder / "static").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"name": "my app", "files": {}}))
    (folder / "index.html").write_text("<html>mine</html>")
    (folder / "static" / "app.js").write_text("console.log(1)")
    return folder


def refused_unchanged(ckpt: Path, folder: Path, match: str) -> None:
    """Compiling into `folder` is refused with `match`, and every file there is unchanged."""
    before = snapshot(folder)
    with pytest.raises(TyllmError, match=match):
        compile_(ckpt, folder)
    assert snapshot(folder) == before


def test_folder_with_a_foreign_manifest_is_never_replaced(checkpoint_factory, user_folder):
    refused_unchanged(checkpoint_factory("qwen3"), user_folder, r"is not a tyllm artifact tree")


def test_tree_with_a_file_added_by_the_user_is_not_replaced(checkpoint_factory, tmp_path):
    tree = compile_(checkpoint_factory("qwen3"), tmp_path / "1die")
    (tree / "notes.txt").write_text("my measurements")
    refused_unchanged(checkpoint_factory("qwen3"), tree, r"will not overwrite it")


def test_a_tree_tyllm_wrote_is_replaced(checkpoint_factory, tmp_path):
    tree = compile_(checkpoint_factory("qwen3"), tmp_path / "1die")
    compile_(checkpoint_factory("qwen3"), tree, max_kv_cache_size=24)
    assert json.loads((tree / "config.json").read_text())["max_kv_cache_size"] == 24
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1die"]


def test_destination_that_is_a_file_is_refused(checkpoint_factory, tmp_path):
    out = tmp_path / "out"
    out.write_text("mine")
    with pytest.raises(TyllmError, match=r"is an existing file"):
        compile_(checkpoint_factory("qwen3"), out)
    assert out.read_text() == "mine"


def test_unwritable_destination_parent_is_refused(checkpoint_factory, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("mine")  # a file where a parent folder would have to be
    with pytest.raises(TyllmError, match=r"Cannot write into .*writable location"):
        compile_(checkpoint_factory("qwen3"), blocker / "1die")
    assert blocker.read_text() == "mine"


def test_destination_named_for_another_die_count_is_refused(checkpoint_factory, tmp_path):
    with pytest.raises(TyllmError, match=r"named for 3 dies but dev_count=2.*2die"):
        compile_(checkpoint_factory("qwen3"), tmp_path / "3die", dev_count=2)
    assert list(tmp_path.iterdir()) == []


def test_vlm_destination_named_for_another_die_count_is_refused(vlm_checkpoint, tmp_path):
    with pytest.raises(TyllmError, match=r"named for 4 dies but num_die=1"):
        build_and_compile_vlm(vlm_checkpoint("qwen2_5_vl"), tmp_path / "4die", num_die=1,
                              progress=False)
    assert list(tmp_path.iterdir()) == []


def test_stale_staging_folders_are_removed_and_reported(checkpoint_factory, tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    stale = tmp_path / f".1die.partial-{dead}"
    (stale / "batch_1").mkdir(parents=True)
    (stale / ".tyllm-staging").write_text(f"{dead}@{host}")
    (stale / "batch_1" / "common_die0.params").write_bytes(b"x" * 100)
    alive = tmp_path / f".other.partial-{os.getpid()}"  # a running compile's folder
    alive.mkdir()
    (alive / ".tyllm-staging").write_text(f"{os.getpid()}@{host}")
    elsewhere = tmp_path / f".shared.partial-{dead}"  # another host's (NFS, Docker volume)
    elsewhere.mkdir()
    (elsewhere / ".tyllm-staging").write_text(f"{dead}@another-host")
    users = tmp_path / f".mine.partial-{dead}"  # looks alike, but tyllm did not write it
    users.mkdir()
    (users / "keep.txt").write_text("mine")
    compile_(checkpoint_factory("qwen3"), tmp_path / "1die")
    assert not stale.exists()
    assert alive.is_dir() and elsewhere.is_dir() and (users / "keep.txt").read_text() == "mine"
    assert f"removed {stale}" in capsys.readouterr().err


def test_model_path_that_is_a_file_is_named(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"0")
    with pytest.raises(TyllmError, match=r"is a file: pass the checkpoint's folder"):
        compile_(model, tmp_path / "1die")


def test_invalid_json_config_is_named(checkpoint_factory, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint_factory("qwen3"), ckpt)
    (ckpt / "config.json").write_text('{"model_type": "qwen3",')
    with pytest.raises(TyllmError, match=r"config.json is not valid JSON"):
        compile_(ckpt, tmp_path / "1die")


def test_truncated_safetensors_is_named(checkpoint_factory, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint_factory("qwen3"), ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(TyllmError, match=r"model.safetensors is not a readable safetensors"):
        compile_(ckpt, tmp_path / "1die")
    assert not (tmp_path / "1die").exists()


def test_index_naming_a_file_outside_the_checkpoint_is_refused(checkpoint_factory, tmp_path):
    from safetensors import safe_open

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint_factory("qwen3"), ckpt)
    with safe_open(ckpt / "model.safetensors", "pt") as f:
        names = list(f.keys())
    shutil.move(ckpt / "model.safetensors", tmp_path / "elsewhere.safetensors")
    index = {"weight_map": dict.fromkeys(names, "../elsewhere.safetensors")}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(TyllmError, match=r"outside the checkpoint folder"):
        compile_(ckpt, tmp_path / "1die")


def test_cli_reports_a_bad_destination_in_one_line(checkpoint_factory, user_folder):
    result = subprocess.run(["tyllm", "compile", str(checkpoint_factory("qwen3")),
                             str(user_folder), "--max-kv", "16", "--seq-lens", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("tyllm: error: ") and "Traceback" not in result.stderr


def test_nested_file_named_manifest_keeps_a_tree_from_being_replaced(checkpoint_factory,
                                                                     tmp_path):
    tree = compile_(checkpoint_factory("qwen3"), tmp_path / "1die")
    (tree / "notes").mkdir()
    (tree / "notes" / "manifest.json").write_text("{}")
    refused_unchanged(checkpoint_factory("qwen3"), tree, r"will not overwrite it")


def test_sharded_checkpoint_in_the_hub_cache_layout_is_read(checkpoint_factory, tmp_path):
    """HF's cache links each shard of a snapshot to ../../blobs/<sha>: a link is fine, only the
    names the index gives must stay inside the folder."""
    from safetensors import safe_open

    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "rev"
    blobs.mkdir()
    shutil.copytree(checkpoint_factory("qwen3"), snapshot)
    shutil.move(snapshot / "model.safetensors", blobs / "abc123")
    (snapshot / "model-00001-of-00001.safetensors").symlink_to("../../blobs/abc123")
    with safe_open(blobs / "abc123", "pt") as f:
        index = {"weight_map": dict.fromkeys(f.keys(), "model-00001-of-00001.safetensors")}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    assert (compile_(snapshot, tmp_path / "1die") / "manifest.json").is_file()


def test_prepare_smollm2_refuses_a_folder_of_user_files(tmp_path):
    from tyllm.tools.smollm2 import prepare_smollm2

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TyllmError, match="was not written by tyllm"):
        prepare_smollm2(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_compile_prints_its_budget_and_refuses_a_disk_too_small(checkpoint_factory, tmp_path,
                                                                 monkeypatch, capsys):
    from collections import namedtuple

    import tyllm.compile.budget

    compile_(checkpoint_factory("qwen3"), tmp_path / "2die", dev_count=2, progress=True)
    assert "plan: 2 graphs (1 distinct programs to compile), tree about" in capsys.readouterr().err
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(tyllm.compile.budget.shutil, "disk_usage",
                        lambda _: usage(10**9, 10**9, 1000))
    with pytest.raises(TyllmError, match=r"needs about .* GB but only 0.00 GB are free"):
        compile_(checkpoint_factory("qwen3"), tmp_path / "new" / "1die")
    assert not (tmp_path / "new").exists()


def test_budget_counts_a_tied_table_once(checkpoint_factory, tmp_path):
    from tyllm.compile.budget import die_weight_bytes
    from tyllm.compile.llm import Checkpoint
    from tyllm.compile.request import CompileRequest
    from tyllm.shard.plan import plan_dies

    ckpt_path = checkpoint_factory("qwen3", tie_word_embeddings=True)
    tree = compile_(ckpt_path, tmp_path / "1die")
    ckpt = Checkpoint(ckpt_path)
    request = CompileRequest(ckpt_path, tree, max_kv_cache_size=16, seq_len_list=(1,))
    estimated = die_weight_bytes(ckpt.dims, plan_dies(ckpt.dims, 1, 1)[0], request, None, True)
    stored = (tree / "batch_1" / "common_die0.params").stat().st_size
    assert 0.9 * stored <= estimated <= stored


def test_cli_errors_name_the_flags_the_user_typed(checkpoint_factory, tmp_path, capsys):
    from tyllm.cli import main

    ckpt = checkpoint_factory("qwen3")
    assert main(["compile", str(ckpt), str(tmp_path / "3die"), "--dies", "2", "--max-kv", "16",
                 "--seq-lens", "1"]) == 2
    assert main(["compile", str(ckpt), str(tmp_path / "1die"), "--max-kv", "8",
                 "--seq-lens", "1,16"]) == 2
    err = capsys.readouterr().err
    assert "tyllm: error: The destination" in err and "but --dies=2" in err
    assert "exceeds --max-kv=8: raise --max-kv or use shorter --seq-lens" in err
    assert "dev_count" not in err and "max_kv_cache_size" not in err
    assert list(tmp_path.iterdir()) == []


def test_compile_vlm_script_errors_name_its_flags(checkpoint_factory, tmp_path):
    script = Path(__file__).parent.parent / "scripts" / "compile_vlm.py"
    done = subprocess.run([sys.executable, str(script), "--model_dir",
                           str(checkpoint_factory("qwen3")), "--output_dir", str(tmp_path / "out"),
                           "--prefill_lens", "16", "16"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "compile_vlm: error: --prefill_lens [16, 16] has duplicates (16)" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(kv_windows=[8, 4, 8]), r"kv_windows \[8, 4, 8\] has duplicates \(8\): list each"),
    (dict(batch_size_list=[1, 4, 4]), r"batch_size_list \[1, 4, 4\] has duplicates \(4\)"),
])
def test_duplicate_list_options_are_refused(checkpoint_factory, tmp_path, kwargs, message):
    with pytest.raises(TyllmError, match=message):
        compile_(checkpoint_factory("qwen3"), tmp_path / "1die", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_duplicate_image_sizes_are_refused(vlm_checkpoint, tmp_path):
    with pytest.raises(TyllmError, match=r"image_sizes .* has duplicates \(\(56, 84\)\)"):
        build_and_compile_vlm(vlm_checkpoint("qwen2_5_vl"), tmp_path / "1die",
                              image_sizes=((56, 84), (56, 84)), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_plan_counts_the_programs_the_cache_holds(checkpoint_factory, tmp_path, monkeypatch,
                                                      capsys):
    monkeypatch.setenv("TYLLM_CACHE", str(tmp_path / "cache"))
    for name in ("a", "b"):
        compile_(checkpoint_factory("qwen3"), tmp_path / name / "1die", progress=True)
    first, second = [line for line in capsys.readouterr().err.splitlines()
                     if line.startswith("plan: ")]
    assert first.startswith("plan: 1 graphs (1 distinct programs to compile), tree about")
    assert second.startswith("plan: 1 graphs (1 distinct programs; 1 in the program cache, "
                             "0 to compile), tree about")
