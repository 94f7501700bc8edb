"""The program cache: an interrupted compile resumes with the programs it finished, a second tree
of the same model reuses what it shares, and nothing that changes a program is reused."""

import json
import subprocess
from pathlib import Path

import pytest
from tyllm.backends.emulated_cpu import TargetSpec

from tyllm import runtime
from tyllm.build_util import build_and_compile_llm
from tyllm.compile import program_cache
from tyllm.tools.doctor import cache_finding
from tyllm.tools.verify import verify_tree


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TYLLM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def lowered(monkeypatch) -> list:
    """Records every program the backend lowers."""
    calls, real = [], TargetSpec.lower_windows
    monkeypatch.setattr(TargetSpec, "lower_windows",
                        lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    return calls


def compile_(ckpt, out, **kwargs):
    # jobs=1: every program lowered in this process, where `lowered` counts them
    args = dict(max_kv_cache_size=32, seq_len_list=[1, 4], progress=False, jobs=1) | kwargs
    return Path(build_and_compile_llm(ckpt, out, **args))


def stages(tree: Path) -> list[str]:
    report = json.loads((tree / "compile_report.json").read_text())
    return [next(iter(g["seconds"])) for g in report["graphs"]]


def test_an_interrupted_compile_resumes_with_what_it_finished(checkpoint_factory, cache,
                                                              tmp_path, monkeypatch):
    ckpt, real, lowered = checkpoint_factory("qwen2"), TargetSpec.lower_windows, []

    def interrupt_second(*args, **kwargs):
        if len(lowered) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(TargetSpec, "lower_windows",
                        lambda *a, **k: lowered.append(a[1]) or interrupt_second(*a, **k))
    with pytest.raises(KeyboardInterrupt):
        compile_(ckpt, tmp_path / "1die")
    monkeypatch.setattr(TargetSpec, "lower_windows",
                        lambda *a, **k: lowered.append(a[1]) or real(*a, **k))
    tree = compile_(ckpt, tmp_path / "1die")
    assert len(lowered) == 3  # 1 finished, 1 interrupted, then only the unfinished one
    assert stages(tree) == ["cached", "export"]
    assert all(c.ok for c in verify_tree(tree))


def test_a_second_tree_reuses_the_programs_it_shares(checkpoint_factory, cache, lowered,
                                                     tmp_path):
    ckpt = checkpoint_factory("llama")
    first = compile_(ckpt, tmp_path / "a" / "1die")
    second = compile_(ckpt, tmp_path / "b" / "1die", seq_len_list=[1, 4, 8])
    assert len(lowered) == 3 and stages(second) == ["cached", "cached", "export"]
    prompt = [3, 14, 15, 92, 65]
    with runtime.load(first) as a, runtime.load(second) as b:
        assert a.generate(prompt, 6, stop_at_eos=False) == b.generate(prompt, 6, stop_at_eos=False)
    assert all(c.ok for c in verify_tree(second))


def test_what_changes_a_program_is_never_reused(checkpoint_factory, cache, lowered, tmp_path):
    ckpt = checkpoint_factory("llama")
    compile_(ckpt, tmp_path / "a" / "1die", export_onnx=False)
    compile_(ckpt, tmp_path / "b" / "1die", export_onnx=False, dtype="float16")
    compile_(ckpt, tmp_path / "c" / "1die", export_onnx=False, max_kv_cache_size=48)
    compile_(ckpt, tmp_path / "d" / "1die", export_onnx=False, use_cache=False)
    assert len(lowered) == 8


def test_cache_location_size_and_clearing(checkpoint_factory, cache, tmp_path):
    compile_(checkpoint_factory("llama"), tmp_path / "1die", export_onnx=False)
    shown = subprocess.run(["tyllm", "cache"], capture_output=True, text=True, check=True).stdout
    assert f"program cache {cache / 'programs'}: 2 programs" in shown
    doctor = subprocess.run(["tyllm", "doctor"], capture_output=True, text=True).stdout
    assert f"program cache {cache / 'programs'}: 2 programs" in doctor
    subprocess.run(["tyllm", "cache", "--clear"], check=True, capture_output=True)
    assert not (cache / "programs").exists()


def test_a_cache_that_cannot_be_written_never_fails_a_compile(checkpoint_factory, tmp_path,
                                                              monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("mine")
    monkeypatch.setenv("TYLLM_CACHE", str(blocker / "cache"))
    tree = compile_(checkpoint_factory("llama"), tmp_path / "1die", export_onnx=False)
    assert (tree / "manifest.json").is_file() and blocker.read_text() == "mine"
    said = [r.getMessage() for r in caplog.records if "could not keep the program" in
            r.getMessage()]
    assert len(said) == 2 and all("the compile goes on without it" in s for s in said)


def test_a_second_vlm_tree_takes_every_program_from_the_cache(vlm_checkpoint, cache, tmp_path):
    from tyllm.build_util import build_and_compile_vlm

    args = dict(num_die=1, image_sizes=((56, 84),), max_model_len=64, kv_windows=(16,),
                export_onnx=False, progress=False)
    ckpt = vlm_checkpoint("qwen2_5_vl")
    # the first compile runs on two processes: one pool for every kind of graph
    trees = [Path(build_and_compile_vlm(ckpt, tmp_path / name / "1die", **args, jobs=jobs))
             for name, jobs in (("a", 2), ("b", 0))]
    reports = [json.loads((t / "compile_report.json").read_text()) for t in trees]
    language = [[g for g in r["graphs"] if g["kind"] in ("decode", "prefill")] for r in reports]
    assert [next(iter(g["seconds"])) for g in language[0]] == ["export", "export"]
    assert [next(iter(g["seconds"])) for g in language[1]] == ["cached", "cached"]
    assert all(g["windows"] == [16, 64] for g in language[1])
    static = [[next(iter(g["seconds"])) for g in r["graphs"] if g["kind"] in ("mrope",
               "rope index") or g["kind"].startswith("vision")] for r in reports]
    assert static[0] == ["export"] * 4 and static[1] == ["cached"] * 4
    kinds = {w["graphs"] for w in reports[0]["workers"]}
    assert kinds == {"vision", "step", "mrope", "rope index"}
    assert len({w["worker"] for w in reports[0]["workers"]}) == 2  # one worker served all
    assert reports[1]["workers"] == []  # nothing to compile: no worker started
    with runtime.load(trees[0]) as a, runtime.load(trees[1]) as b:
        prompt = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50, 28]
        assert a.generate(prompt, 6, stop_at_eos=False) == b.generate(prompt, 6,
                                                                    stop_at_eos=False)


def damage_library(entry: Path) -> None:
    """A library cut short, as a full disk or a killed copy leaves it."""
    library = entry / "library.so"
    with open(library, "r+b") as f:
        f.truncate(library.stat().st_size // 2)


def drop_digests(entry: Path) -> None:
    """An entry as an older tyllm wrote it: files without a digests.json."""
    (entry / "digests.json").unlink()


@pytest.mark.parametrize(("damage", "reason", "doctor_flags_it"), [
    (damage_library, "library.so does not match its sha256: damaged or truncated", True),
    (drop_digests, "it has no digests.json: written by an older tyllm", False),  # stale only
])
def test_a_damaged_cache_entry_is_removed_said_and_compiled_again(checkpoint_factory, cache,
                                                                  tmp_path, damage, reason,
                                                                  doctor_flags_it, caplog):
    ckpt = checkpoint_factory("llama")
    first = compile_(ckpt, tmp_path / "a" / "1die")
    entry = sorted((cache / "programs").iterdir())[0]
    size = (entry / "library.so").stat().st_size
    damage(entry)
    doctor = cache_finding()
    assert doctor.ok != doctor_flags_it
    assert (f"1 of 2 programs fail their digests, e.g. {entry.name} ({reason})" in doctor.text
            ) == doctor_flags_it
    second = compile_(ckpt, tmp_path / "b" / "1die")
    said = [r.getMessage() for r in caplog.records if r.name == program_cache.__name__]
    assert said == [f"tyllm: removed the program cache entry {entry} ({reason}); its program "
                    f"is compiled again."]
    assert sorted(stages(second)) == ["cached", "export"]  # only the damaged one compiled anew
    assert program_cache.files(entry.name, True)[0].stat().st_size == size  # a whole new entry
    prompt = [3, 14, 15, 92, 65]
    with runtime.load(first) as a, runtime.load(second) as b:
        assert a.generate(prompt, 6, stop_at_eos=False) == b.generate(prompt, 6, stop_at_eos=False)
    checks = verify_tree(second)
    assert len(checks) == 2 and all(c.ok for c in checks)
    assert cache_finding().ok


def test_cache_entries_are_named_with_the_backends_suffix(checkpoint_factory, cache, tmp_path):
    """An onnx_reference library and its ONNX twin are both .onnx files: kept apart."""
    ckpt = checkpoint_factory("llama")
    trees = [compile_(ckpt, tmp_path / name / "1die", backend="onnx_reference")
             for name in ("a", "b")]
    entries = sorted((cache / "programs").iterdir())
    assert [sorted(p.name for p in e.iterdir()) for e in entries] == [
        ["digests.json", "io.json", "library.onnx", "twin"]] * 2
    assert all((e / "twin" / "twin.onnx").is_file() for e in entries)
    assert stages(trees[1]) == ["cached", "cached"]
    prompt = [3, 14, 15, 92, 65]
    with runtime.load(trees[0]) as a, runtime.load(trees[1]) as b:
        assert a.generate(prompt, 6, stop_at_eos=False) == b.generate(prompt, 6, stop_at_eos=False)
