"""`tyllm compare`: an untouched tree passes; injected faults (a perturbed weight in one die's
parameter file, a skipped all-reduce on one die, a doubled int4 group scale) are named at the
right layer and die; bad input ends in one clear sentence."""

import json
import shutil
from pathlib import Path

import pytest
from test_quant import SMALL
from test_quant_convert import awq_checkpoint
from vlm_models import SIZES, picture

from tyllm.artifacts.manifest import write_manifest
from tyllm.artifacts.params import load_params, save_params
from tyllm.build_util import build_and_compile_llm
from tyllm.cli import main
from tyllm.compare import compare
from tyllm.compare.report import text
from tyllm.errors import TyllmError
from tyllm.runtime import collective

pytestmark = pytest.mark.slow
PROMPT = [5, 17, 3, 99, 42, 7, 11, 250 - 1, 64, 128, 2, 9, 77, 31]  # 14 tokens: 8 + 6 rows
LAYERS = 3


@pytest.fixture(scope="module")
def qwen3(checkpoint_factory):
    return checkpoint_factory("qwen3", seed=2, num_hidden_layers=LAYERS)


@pytest.fixture(scope="module")
def trees(qwen3, tmp_path_factory):
    """tree(dies, dtype="float32", backend=None) -> a compiled tree of the 3-layer Qwen3,
    compiled once per module (KV 64, windows 16 and 64: the prompt crosses a window; the
    2-die float32 tree has batch sizes 1 and 2)."""
    made: dict = {}

    def tree(dies: int, dtype: str = "float32", backend: str | None = None) -> Path:
        key = (dies, dtype, backend)
        if key not in made:
            out = tmp_path_factory.mktemp("compare-tree") / f"{dies}die"
            extra = {"backend": backend} if backend else {}
            if (dies, dtype, backend) == (2, "float32", None):
                extra["batch_size_list"] = [1, 2]
            made[key] = Path(build_and_compile_llm(
                qwen3, out, max_kv_cache_size=64, seq_len_list=[1, 8], dev_count=dies,
                export_onnx=False, progress=False, kv_windows=(16,), dtype=dtype, **extra))
        return made[key]

    return tree


def faulty_copy(tree: Path, folder: Path) -> Path:
    copy = folder / tree.name
    shutil.copytree(tree, copy)
    return copy


def change_params(tree: Path, die: int, change) -> None:
    """`change(tensors)` on die `die`'s weights file, the manifest regenerated so the tree
    still loads."""
    path = tree / "batch_1" / f"common_die{die}.params"
    tensors = {k: v.clone() for k, v in load_params(path).items()}
    change(tensors)
    save_params(path, tensors)
    write_manifest(tree)


def first_failure(report) -> tuple[str, int]:
    p = report.first_failure
    assert p is not None, text(report)
    return p.name, p.die


@pytest.mark.parametrize("dies,workers", [(1, "threads"), (2, "processes")])
def test_untouched_float32_tree_passes_everywhere(trees, qwen3, dies, workers):
    report = compare(trees(dies), qwen3, tokens=PROMPT, new_tokens=6, workers=workers,
                     quiet=True)
    assert report.passed, text(report)
    assert len(report.points) == dies * (2 + 5 * LAYERS + 1)
    assert min(p.measure.cosine for p in report.points) >= 0.9999
    assert report.logits.top1 == 1.0 and report.logits.first_divergence is None
    assert len(report.logits.tokens) == len(PROMPT) + 6
    if dies == 2:  # its batch-2 decode graph too, every row
        assert report.logits.batch == 2 and len(report.logits.batched) == 7


def test_perturbed_weight_is_named_at_its_layer_and_die(trees, qwen3, tmp_path):
    tree = faulty_copy(trees(2), tmp_path)

    def perturb(tensors):
        tensors["layers.1.mlp.gate_proj.weight"] *= 1.2

    change_params(tree, 1, perturb)
    tokens = tmp_path / "prompt.json"
    tokens.write_text(json.dumps(PROMPT))
    out = tmp_path / "report.json"
    rc = main(["compare", str(tree), "--model", str(qwen3), "--tokens", str(tokens),
               "--new-tokens", "4", "--json", str(out), "--plot", str(tmp_path / "p.png")])
    assert rc == 1
    data = json.loads(out.read_text())
    assert not data["passed"]
    failing = [p for p in data["points"] if not p["passed"]]
    assert (failing[0]["layer"], failing[0]["die"], failing[0]["point"]) == (1, 1, "mlp.partial")
    assert data["first_failure"]["where"] == ("die 1, layer 1 (model.layers.1), MLP output "
                                              "before all-reduce")
    assert all(p["passed"] for p in data["points"] if p["layer"] == 0)  # nothing before it
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_skipped_all_reduce_is_named_on_its_die(trees, qwen3, monkeypatch):
    """Die 1 takes part in layer 1's attention all-reduce but keeps its own partial sum, in
    every step (the Python thread group, so the skip can be injected)."""
    calls: dict[int, int] = {}
    reduce = collective.ThreadMember.all_reduce

    def skipping(self, x):
        total = reduce(self, x)
        n = calls[self.rank] = calls.get(self.rank, -1) + 1
        skip = self.rank == 1 and n % (2 * LAYERS) == 2  # 2: layer 1's attention
        return x.clone() if skip else total

    monkeypatch.setattr(collective, "native_library", lambda: None)
    monkeypatch.setattr(collective.ThreadMember, "all_reduce", skipping)
    report = compare(trees(2), qwen3, tokens=PROMPT[:8], new_tokens=2, quiet=True)
    assert first_failure(report) == ("layers.1.attention.output", 1)
    assert "die 1, layer 1 (model.layers.1), attention output after all-reduce" in text(report)


@pytest.fixture(scope="module")
def int4(checkpoint_factory, tmp_path_factory):
    """(AWQ checkpoint, 2-die int4 tree compiled from its tyllm conversion)."""
    from tyllm.quant.convert import convert_checkpoint

    folder = tmp_path_factory.mktemp("compare-int4")
    awq = awq_checkpoint(checkpoint_factory("qwen2", seed=3, **SMALL), folder / "awq")
    converted = convert_checkpoint(awq, folder / "converted")
    tree = build_and_compile_llm(converted, folder / "tree" / "2die", max_kv_cache_size=64,
                                 seq_len_list=[1, 8], dev_count=2, export_onnx=False,
                                 progress=False, kv_windows=(16,))
    return awq, Path(tree)


def test_int4_tree_passes_against_its_own_checkpoint_and_a_doubled_scale_is_named(int4,
                                                                                  tmp_path):
    awq, tree = int4
    report = compare(tree, awq, tokens=PROMPT, new_tokens=4, quiet=True)
    assert report.thresholds.name == "float32"  # its own weights: no quantization noise
    assert report.passed, text(report)
    faulty = faulty_copy(tree, tmp_path)

    def double_a_group(tensors):
        scales = tensors["layers.0.mlp.up_proj.scales"]
        scales.view(-1)[:4] *= 2

    change_params(faulty, 0, double_a_group)
    assert first_failure(compare(faulty, awq, tokens=PROMPT, new_tokens=2,
                                 quiet=True)) == ("layers.0.mlp.partial", 0)


def test_float16_tree_passes_its_thresholds(trees, qwen3):
    report = compare(trees(1, "float16"), qwen3, tokens=PROMPT, new_tokens=4, quiet=True)
    assert report.thresholds.name == "float16"
    assert report.passed, text(report)


def test_onnx_reference_backend_tree(trees, qwen3):
    report = compare(trees(2, backend="onnx_reference"), qwen3, tokens=PROMPT, new_tokens=2,
                     quiet=True)
    assert report.passed, text(report)


def test_another_model_is_refused(trees, checkpoint_factory):
    other = checkpoint_factory("qwen3", seed=2, num_hidden_layers=2)
    with pytest.raises(TyllmError, match="num_hidden_layers 2 vs 3"):
        compare(trees(1), other, tokens=PROMPT, quiet=True)
    llama = checkpoint_factory("llama", seed=2)
    with pytest.raises(TyllmError, match="model_type llama vs qwen3"):
        compare(trees(1), llama, tokens=PROMPT, quiet=True)


def test_prompt_longer_than_the_kv_cache_is_refused(trees, qwen3):
    with pytest.raises(TyllmError, match="KV cache holds 64"):
        compare(trees(1), qwen3, tokens=[3] * 60, new_tokens=8, quiet=True)


def test_tree_of_another_backend_is_refused(trees, qwen3, tmp_path):
    tree = faulty_copy(trees(1), tmp_path)
    config = json.loads((tree / "config.json").read_text())
    (tree / "config.json").write_text(json.dumps(config | {"backend": "npu_hw"}))
    write_manifest(tree)
    with pytest.raises(TyllmError, match="backend 'npu_hw'"):
        compare(tree, qwen3, tokens=PROMPT, quiet=True)


def test_missing_tokenizer_asks_for_token_ids(trees, qwen3, tmp_path, capsys):
    tree = faulty_copy(trees(1), tmp_path)
    (tree / "tokenizer.json").unlink()
    (tree / "tokenizer_config.json").unlink()
    write_manifest(tree)
    assert main(["compare", str(tree), "--model", str(qwen3), "--prompt", "hi"]) == 2
    assert "--tokens" in capsys.readouterr().err


def test_missing_checkpoint_and_bad_token_file(trees, tmp_path, capsys):
    assert main(["compare", str(trees(1)), "--model", str(tmp_path / "nothing")]) == 2
    assert "no config.json" in capsys.readouterr().err
    bad = tmp_path / "tokens.txt"
    bad.write_text("1 2 three")
    assert main(["compare", str(trees(1)), "--model", str(tmp_path), "--tokens",
                 str(bad)]) == 2
    assert "not a list of token ids" in capsys.readouterr().err


def test_the_production_tree_is_untouched(trees, qwen3):
    tree = trees(1)
    before = {p: p.stat().st_mtime_ns for p in tree.rglob("*")}
    compare(tree, qwen3, tokens=PROMPT[:4], new_tokens=1, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in tree.rglob("*")} == before


def test_vlm_vision_blocks_and_language_pass_and_a_vision_fault_is_named(vlm_tree,
                                                                         vlm_checkpoint,
                                                                         tmp_path):
    """Qwen3-VL (deepstack) on 2 dies: every vision block and deepstack merger, then the
    language model over the multimodal prompt; a perturbed vision weight on vision die 1."""
    tree, model = vlm_tree("qwen3_vl", 2), vlm_checkpoint("qwen3_vl")
    image = picture(SIZES["qwen3_vl"], 0)
    report = compare(tree, model, prompt="w3 w4 w5", image=image, chat=False, new_tokens=3,
                     quiet=True)
    assert report.passed, text(report)
    names = {p.name for p in report.points}
    assert {"vision.blocks.2.block.output", "vision.deepstack.1", "vision.merger",
            "layers.1.layer.output"} <= names
    assert report.vision_dies == 2 and len(report.logits.tokens) == len(report.prompt_tokens) + 3
    faulty = faulty_copy(tree, tmp_path)
    weights = faulty / "visual" / "constant_die1.params"
    tensors = {k: v.clone() for k, v in load_params(weights).items()}
    tensors["blocks.1.mlp.out_weight"] *= 1.2
    save_params(weights, tensors)
    write_manifest(faulty)
    bad = compare(faulty, model, prompt="w3 w4 w5", image=image, chat=False, new_tokens=1,
                  quiet=True)
    assert first_failure(bad) == ("vision.blocks.1.mlp.partial", 1)
    assert "vision die 1, vision block 1 (visual.blocks.1), MLP output before" in text(bad)


def test_vlm_compare_from_the_command_line(vlm_tree, vlm_checkpoint, tmp_path):
    tree, model = vlm_tree("qwen2_5_vl", 2), vlm_checkpoint("qwen2_5_vl")
    image = tmp_path / "picture.png"
    picture(SIZES["qwen2_5_vl"], 1).save(image)
    out = tmp_path / "report.json"
    assert main(["compare", str(tree), "--model", str(model), "--image", str(image), "--prompt",
                 "w3 w4", "--raw", "--new-tokens", "2", "--json", str(out), "--plot",
                 str(tmp_path / "plot.png")]) == 0
    data = json.loads(out.read_text())
    assert data["passed"] and data["vision_dies"] == 2
    assert {p["tower"] for p in data["points"]} == {"vision", "language"}
    assert main(["compare", str(tree), "--model", str(model), "--prompt", "w3"]) == 2
