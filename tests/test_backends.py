"""The backend seam: a registry whose error names the valid backends, the backend recorded in
every tree, and a tree loaded by the backend it names."""

import json
import os
import threading

import pytest
from tyllm.backends import REGISTRY, get_backend

from tyllm import runtime
from tyllm.artifacts.manifest import write_manifest
from tyllm.build_util import build_and_compile_llm
from tyllm.errors import ArtifactError, TyllmError


def test_an_unknown_backend_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"'npu' is not one tyllm has: choose one of "
                                         r"\['emulated_cpu', 'onnx_reference'\]"):
        get_backend("npu")


def test_every_registered_backend_makes_a_target_and_loads_programs():
    for name in REGISTRY:
        backend = get_backend(name)
        assert backend.name == name
        target = backend.target(1)
        assert callable(target.lower) and callable(target.lower_windows)
        assert target.as_json()["backend"] == name and callable(backend.load)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_backend_places_a_dies_threads(name):
    """`pin_to_cores` sets the calling thread's cores and lets the backend place its kernel
    threads there (run on a thread of its own: the affinity is the thread's)."""
    from tyllm.runtime.placement import pin_to_cores

    cores, seen = {sorted(os.sched_getaffinity(0))[0]}, []

    def die() -> None:
        pin_to_cores(cores, get_backend(name))
        seen.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=die)
    thread.start()
    thread.join()
    assert seen == [cores]
    assert all(isinstance(p, str) for p in get_backend(name).tree_packages)


def test_a_compile_for_an_unknown_backend_is_refused_before_any_work(checkpoint_factory,
                                                                     tmp_path):
    with pytest.raises(TyllmError, match="choose one of"):
        build_and_compile_llm(checkpoint_factory("qwen3"), tmp_path / "1die",
                              max_kv_cache_size=16, seq_len_list=[1], progress=False,
                              backend="npu")
    assert not (tmp_path / "1die").exists()


def test_a_tree_records_its_backend_and_is_loaded_by_it(checkpoint_factory, tmp_path):
    tree = build_and_compile_llm(checkpoint_factory("qwen3"), tmp_path / "1die",
                                 max_kv_cache_size=16, seq_len_list=[1], export_onnx=False,
                                 progress=False)
    config_path = tmp_path / "1die" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["backend"] == "emulated_cpu"
    with runtime.load(tree) as session:
        assert len(session.generate([3, 4], 2, stop_at_eos=False)) == 2
    config["backend"] = "npu"
    config_path.write_text(json.dumps(config))
    write_manifest(tmp_path / "1die")  # even with a manifest made to match
    with pytest.raises(ArtifactError, match="compiled for the backend 'npu'"):
        runtime.load(tree)
