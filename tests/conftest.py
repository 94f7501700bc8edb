import os
from pathlib import Path

import pytest
from models import make_checkpoint  # tests/ is on sys.path (pytest's rootdir-relative import)
from vlm_models import SIZES, VLM_MAKERS


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The suite's own tyllm cache (programs, converted SmolLM2, engine trees): a run never
    takes a program compiled by an earlier run or by the user's own compiles."""
    before = os.environ.get("TYLLM_CACHE")
    os.environ["TYLLM_CACHE"] = str(tmp_path_factory.mktemp("tyllm-cache"))
    yield
    if before is None:
        os.environ.pop("TYLLM_CACHE", None)
    else:
        os.environ["TYLLM_CACHE"] = before


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory):
    """make(arch, **config overrides) -> HF folder, cached per argument set."""
    made: dict = {}

    def make(arch: str, seed: int = 0, **overrides) -> Path:
        key = (arch, seed, tuple(sorted(overrides.items())))
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{arch}-ckpt")
            made[key] = make_checkpoint(folder, arch, seed, **overrides)
        return made[key]

    return make


@pytest.fixture(scope="session")
def smollm2_path():
    from tyllm.smollm2 import prepare_smollm2

    return prepare_smollm2()


@pytest.fixture(scope="session")
def smollm2_tree(smollm2_path, tmp_path_factory):
    """tree(dies) -> SmolLM2 compiled once per session: max_kv 256, seq lens [1, 8], KV windows
    32, 64 and 256 (chat prompts and answers cross them mid-prefill and mid-decode); the 1-die
    tree also has batch sizes [1, 4] (the vLLM tests decode several requests per call), the
    others are batch-1 trees (served one row per call)."""
    from tyllm.build_util import build_and_compile_llm

    trees: dict = {}

    def tree(dies: int) -> Path:
        if dies not in trees:
            out = tmp_path_factory.mktemp("smollm2-tree") / f"{dies}die"
            trees[dies] = Path(build_and_compile_llm(
                smollm2_path, out, max_kv_cache_size=256, seq_len_list=[1, 8], dev_count=dies,
                export_onnx=False, progress=False, kv_windows=(32, 64),
                batch_size_list=[1, 4] if dies == 1 else [1]))
        return trees[dies]

    return tree


@pytest.fixture(scope="session")
def vlm_checkpoint(tmp_path_factory):
    """make(arch) -> a small random Qwen2.5-VL / Qwen3-VL HF folder (tests/vlm_models.py)."""
    made = {}

    def make(arch: str) -> Path:
        if arch not in made:
            made[arch] = VLM_MAKERS[arch](tmp_path_factory.mktemp(arch))
        return made[arch]

    return make


@pytest.fixture(scope="session")
def vlm_tree(vlm_checkpoint, tmp_path_factory):
    """tree(arch, dies, vm_remap, lm_remap, sizes, modalities, backend) compiled once per
    argument set (max_model_len 160, prefill length 16, KV windows 32, 64 and 160: image prompts
    cross them)."""
    trees = {}

    from tyllm.build_util import build_and_compile_vlm

    def tree(arch: str, dies: int, vm_remap=None, lm_remap=None, sizes=None,
             modalities=("image", "video"), backend="emulated_cpu") -> Path:
        key = (arch, dies, vm_remap, lm_remap, sizes, modalities, backend)
        if key not in trees:
            out = tmp_path_factory.mktemp(f"{arch}-tree") / f"{dies}die"
            trees[key] = Path(build_and_compile_vlm(
                vlm_checkpoint(arch), out, num_die=dies, image_sizes=sizes or (SIZES[arch],),
                modalities=modalities, prefill_lens=(16,), max_model_len=160,
                vm_die_remap=vm_remap, lm_die_remap=lm_remap, export_onnx=False, progress=False,
                kv_windows=(32, 64), backend=backend))
        return trees[key]

    return tree
