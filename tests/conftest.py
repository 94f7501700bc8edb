import os
from pathlib import Path

import pytest

# tests/ is on sys.path (pytest's rootdir-relative import)
from models import SPECULATIVE_TOKENS, make_checkpoint
from vlm_models import SIZES, VLM_MAKERS

# the shared Qwen3-VL trees also decode 2 sequences per call and verify 3 speculative tokens
VLM_EXTRA = {"qwen3_vl": {"speculative_tokens": 3, "batch_size_list": [1, 2]}}

# Test files that share session fixtures run on one xdist worker (scripts/test.sh runs two);
# the longest groups are handed out first so the workers finish together.
SHARED_GROUPS = {"test_smollm2": "smollm2", "test_vllm_parity": "smollm2",
                 "test_vllm_sampling": "smollm2", "test_vllm_server": "smollm2",
                 "test_vlm": "vlm", "test_vlm_vllm": "vlm", "test_compare": "vlm",
                 "test_speculate": "qwen3-2die", "test_vllm_spec": "qwen3-2die",
                 "test_vllm_prefix": "qwen3-2die"}
LONGEST_FIRST = ["smollm2", "vlm", "test_parity_random", "qwen3-2die", "test_quant_convert",
                 "test_quant", "test_program_cache", "test_bench", "test_docker", "test_artifacts"]


SKIP_DOCKER = pytest.mark.skip(reason="builds both Docker images and works in them (15-25 min): "
                                      "selected only by `pytest -m docker`")


def docker_selected(config) -> bool:
    """True when -m names the docker marker (and not as `not docker`)."""
    expr = config.getoption("markexpr", "") or ""
    return "docker" in expr.replace("not docker", "")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups off the marks
def pytest_collection_modifyitems(config, items):
    """One xdist group per test file (module fixtures compile once), files sharing session
    fixtures in one group, the longest groups first; `docker` tests only when -m selects them."""
    def group(item) -> str:
        module = item.path.stem
        return SHARED_GROUPS.get(module, module)

    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))
        if item.get_closest_marker("docker") and not docker_selected(config):
            item.add_marker(SKIP_DOCKER)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group(item), len(rank)))


@pytest.fixture(scope="session", autouse=True)
def suite_environment(tmp_path_factory):
    """The suite's own tyllm cache (programs, converted SmolLM2, engine trees): a run never
    takes a program compiled by an earlier run or by the user's own compiles. Benchmarks
    called by tests never wait for a quiet machine: tests run side by side."""
    values = {"TYLLM_CACHE": str(tmp_path_factory.mktemp("tyllm-cache")),
              "TYLLM_BENCH_QUIET_WAIT_S": "0"}
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


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
    from tyllm.tools.smollm2 import prepare_smollm2

    return prepare_smollm2()


@pytest.fixture(scope="session")
def smollm2_tree(smollm2_path, tmp_path_factory):
    """tree(dies) -> SmolLM2 compiled once per session: max_kv 256, seq lens [1, 8], KV windows
    32 and 256 (chat prompts and answers cross 32 mid-prefill or mid-decode); the 1-die
    tree also has batch sizes [1, 4] (the vLLM tests decode several requests per call), the
    others are batch-1 trees (served one row per call)."""
    from tyllm.build_util import build_and_compile_llm

    trees: dict = {}

    def tree(dies: int) -> Path:
        if dies not in trees:
            out = tmp_path_factory.mktemp("smollm2-tree") / f"{dies}die"
            trees[dies] = Path(build_and_compile_llm(
                smollm2_path, out, max_kv_cache_size=256, seq_len_list=[1, 8], dev_count=dies,
                export_onnx=False, progress=False, kv_windows=(32,),
                batch_size_list=[1, 4] if dies == 1 else [1]))
        return trees[dies]

    return tree


@pytest.fixture(scope="session")
def spec_tree(checkpoint_factory, tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, tree): a 2-die random Qwen3 with verify graphs for SPECULATIVE_TOKENS
    tokens at batch sizes 1 and 2 (max_kv 128, seq lens [1, 8], KV window 32), shared by the
    speculative decoding and vLLM prefix caching tests."""
    from tyllm.build_util import build_and_compile_llm

    source = checkpoint_factory("qwen3", seed=7)
    out = tmp_path_factory.mktemp("spec-tree") / "2die"
    return source, Path(build_and_compile_llm(
        source, out, max_kv_cache_size=128, seq_len_list=[1, 8], dev_count=2, export_onnx=False,
        progress=False, kv_windows=(32,), batch_size_list=[1, 2],
        speculative_tokens=SPECULATIVE_TOKENS))


@pytest.fixture(scope="session")
def spec_draft(checkpoint_factory, tmp_path_factory) -> Path:
    """Another random Qwen3 of the same vocabulary on 1 die, compiled as an engine start
    compiles a draft for spec_tree's engines (so theirs take its programs from the cache)."""
    from tyllm.build_util import build_and_compile_llm

    out = tmp_path_factory.mktemp("spec-draft") / "1die"
    return Path(build_and_compile_llm(checkpoint_factory("qwen3", seed=8), out,
                                      max_kv_cache_size=128, seq_len_list=[1, 8], dev_count=1,
                                      progress=False))


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
    cross them; Qwen3-VL trees add batch size 2 and verify graphs: VLM_EXTRA)."""
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
                kv_windows=(32, 64), backend=backend, **VLM_EXTRA.get(arch, {})))
        return trees[key]

    return tree


@pytest.fixture(scope="session")
def smollm2_engines(smollm2_path, smollm2_tree, tmp_path_factory):
    """{"stock" | "tyllm": [greedy outputs, sampled outputs]} of the two SmolLM2 engines the vLLM
    parity and sampling tests share (tests/smollm2_requests.py; an engine start costs ~35 s):
    stock vLLM CPU, and tyllm's 1-die tree as threads, whole-prompt prefill both."""
    from smollm2_requests import batches
    from vllm_jobs import engine, run_batches

    requests = batches(smollm2_path)
    tyllm = {"tyllm": {"artifacts_path": str(smollm2_tree(1)), "workers": "threads"}}
    return {name: run_batches(tmp_path_factory.mktemp(f"{name}-engine"),
                              engine(smollm2_path, 1, 256, chunked=False, **extra), requests,
                              stock=name == "stock")
            for name, extra in (("stock", {}), ("tyllm", {"additional_config": tyllm}))}
