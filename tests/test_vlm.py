"""Vision-language trees: compile (visual/, mrope/, rope index, language model) and greedy parity
with HF transformers for image and video prompts, die remaps, several image sizes, bad input."""

import json
from pathlib import Path

import pytest
from vlm_models import SIZES, picture
from vlm_reference import hf_generate

from tyllm import runtime
from tyllm.build_util import build_and_compile_vlm
from tyllm.errors import TyllmError

pytestmark = pytest.mark.slow

PROMPT = ("w3 w4 <|vision_start|><|image_pad|><|vision_end|> w5 "
          "<|vision_start|><|video_pad|><|vision_end|> w6 w7")


def inputs(arch: str, seed: int = 0):
    size = SIZES[arch]
    return [picture(size, seed)], [[picture(size, seed + 10 + i) for i in range(3)]]


@pytest.mark.parametrize("arch,dies", [("qwen2_5_vl", 2), ("qwen3_vl", 2), ("qwen2_vl", 2)])
def test_image_and_video_match_hf(vlm_tree, vlm_checkpoint, arch, dies):
    """1 fps: Qwen2.5-VL's temporal positions step by tokens_per_second * 2 s = 4. (1-die VLM
    trees: test_several_image_sizes.)"""
    images, videos = inputs(arch)
    expected = hf_generate(vlm_checkpoint(arch), PROMPT, images, videos, max_new_tokens=10,
                           fps=1.0)
    with runtime.load(vlm_tree(arch, dies)) as session:
        got = session.generate_multimodal(PROMPT, images=images, videos=videos,
                                          max_new_tokens=10, video_fps=1.0)
    assert got == expected


def test_onnx_reference_backend_matches_hf(vlm_tree, vlm_checkpoint):
    """Vision, mrope, rope-index and language graphs all run in onnxruntime (the second
    backend), the language dies' all-reduces in the runtime's collective."""
    images, videos = inputs("qwen2_5_vl")
    expected = hf_generate(vlm_checkpoint("qwen2_5_vl"), PROMPT, images, videos,
                           max_new_tokens=10, fps=1.0)
    tree = vlm_tree("qwen2_5_vl", 2, backend="onnx_reference")
    assert (tree / "compute_rope_param.onnx").is_file() and not list(tree.rglob("*.so"))
    with runtime.load(tree) as session:
        got = session.generate_multimodal(PROMPT, images=images, videos=videos,
                                          max_new_tokens=10, video_fps=1.0)
    assert got == expected


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_image_only_and_video_only_prompts(vlm_tree, vlm_checkpoint, arch):
    images, videos = inputs(arch, seed=3)
    image_prompt = "w9 <|vision_start|><|image_pad|><|vision_end|> w8"
    video_prompt = "<|vision_start|><|video_pad|><|vision_end|> w1 w2"
    with runtime.load(vlm_tree(arch, 2)) as session:
        got_image = session.generate_multimodal(image_prompt, images=images, max_new_tokens=8)
        got_video = session.generate_multimodal(video_prompt, videos=videos, max_new_tokens=8)
        other = session.generate_multimodal(image_prompt, images=[picture(SIZES[arch], 99)],
                                            max_new_tokens=8)
    ckpt = vlm_checkpoint(arch)
    assert got_image == hf_generate(ckpt, image_prompt, images, max_new_tokens=8)
    assert got_video == hf_generate(ckpt, video_prompt, videos=videos, max_new_tokens=8)
    assert other != got_image  # the pixels reach the answer


def test_uneven_vision_dies_and_remap_processes(vlm_tree, vlm_checkpoint):
    """3 language dies (4 query heads: 2/1/1), vision on dies 2 and 0 (3 heads: 2/1), processes."""
    arch = "qwen3_vl"
    tree = vlm_tree(arch, 3, vm_remap=(2, 0), lm_remap=(1, 2, 0))
    config = json.loads((tree / "config.json").read_text())
    assert config["vision"]["die_remap"] == [2, 0] and config["language_die_remap"] == [1, 2, 0]
    assert sorted(p.name for p in (tree / "visual").glob("vit_die*.so")) == [
        "vit_die0.so", "vit_die1.so"]
    images, videos = inputs(arch, seed=5)
    expected = hf_generate(vlm_checkpoint(arch), PROMPT, images, videos, max_new_tokens=8)
    with runtime.load(tree, workers="processes") as session:
        assert session.generate_multimodal(PROMPT, images=images, videos=videos,
                                           max_new_tokens=8) == expected



def test_load_memory_counts_every_part_of_a_vlm_tree(vlm_tree):
    """The benchmark's load-memory figure for a VLM tree: vision, mrope, rope-index and
    embedding parameters counted, an image request run, the vision die processes measured."""
    from tyllm.bench.load_memory import load_memory, parameter_files
    from tyllm.runtime.tree import Tree

    tree = vlm_tree("qwen2_5_vl", 2)
    files = {p.relative_to(tree).as_posix() for p in parameter_files(Tree(tree))}
    assert {"visual/constant_die0.params", "visual/constant_die1.params",
            "visual/grid_die0_56x84.params", "mrope/mrope_die1_16.params",
            "compute_rope_param.params", "embedding.params",
            "batch_1/common_die1.params"} <= files, files
    measured = load_memory(tree, "processes")
    assert measured["param_bytes"] == sum((tree / f).stat().st_size for f in files)
    assert measured["peak_rss_above_imports_bytes"] > 0

def test_tree_layout(vlm_tree):
    tree = vlm_tree("qwen2_5_vl", 2)
    for name in ("visual/vit_die0.so", "visual/vit_die1.so", "visual/constant_die1.params",
                 "visual/aot_config.json", "visual/buffer_config.json", "visual/graph.json",
                 "visual/vit_die0_56x84.onnx", "compute_rope_param.so",
                 "compute_rope_param.params", "embedding.params", "tokenizer.json",
                 "config.json", "mrope/mrope_die1_16.so", "batch_1/seqlen_16/llm_prefill_die1.so",
                 "batch_1/seqlen_1/llm_decode_die0.so",
                 "batch_1/seqlen_16/llm_prefill_kv32_die1.so", "manifest.json"):
        assert (tree / name).is_file(), name
    assert not list(tree.parent.glob(".*partial*"))
    from tyllm.tools.verify import verify_tree

    checks = verify_tree(tree)  # vision graphs vs their ONNX twins (language twins were skipped)
    assert [c.kind for c in checks] == ["vision", "vision"] and all(c.ok for c in checks)


def two_size_image_tree(vlm_tree):
    return vlm_tree("qwen2_5_vl", 1, sizes=((56, 84), (84, 56)), modalities=("image",))


def test_several_image_sizes(vlm_tree, vlm_checkpoint, caplog):
    arch, large = "qwen2_5_vl", (84, 56)
    tree = two_size_image_tree(vlm_tree)
    assert (tree / "visual" / "vit_die0_84x56.so").is_file()
    prompt = "w1 <|vision_start|><|image_pad|><|vision_end|> w2"
    tall = [picture(large, 7)]
    with runtime.load(tree) as session:
        got = session.generate_multimodal(prompt, images=tall, max_new_tokens=8)
        assert got == hf_generate(vlm_checkpoint(arch), prompt, tall, max_new_tokens=8)
        odd = picture((140, 56), 8)  # no compiled grid: resized to the nearest (84x56), logged
        with caplog.at_level("WARNING", logger="tyllm.vlm"):
            session.generate_multimodal(prompt, images=[odd], max_new_tokens=2)
    assert "resized to the compiled size 84x56" in caplog.text


def test_bad_inputs(vlm_tree, vlm_checkpoint, checkpoint_factory, tmp_path):
    arch = "qwen2_5_vl"
    image_only = two_size_image_tree(vlm_tree)  # max_model_len 160, 6 tokens per image
    prompt = "<|vision_start|><|video_pad|><|vision_end|> w1"
    with runtime.load(image_only) as session:
        with pytest.raises(TyllmError, match="not videos"):
            session.generate_multimodal(prompt, videos=inputs(arch)[1])
        many = "".join("<|vision_start|><|image_pad|><|vision_end|>" for _ in range(30))
        with pytest.raises(TyllmError, match="max_model_len"):
            session.generate_multimodal(many, images=[picture(SIZES[arch], i) for i in range(30)])
        with pytest.raises(TyllmError, match="placeholders"):
            session.generate_multimodal("w1 w2", images=[picture(SIZES[arch], 0)])
    with pytest.raises(TyllmError, match="not a vision-language model"):
        build_and_compile_vlm(checkpoint_factory("qwen3"), tmp_path / "t" / "1die",
                              progress=False)
    from tyllm.cli import main

    assert main(["serve", str(vlm_checkpoint(arch))]) == 2  # serve needs --image-sizes
    with pytest.raises(TyllmError, match="vm_die_remap"):
        build_and_compile_vlm(vlm_checkpoint(arch), tmp_path / "r" / "2die", num_die=2,
                              vm_die_remap=(0, 2), progress=False)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


SCHEMAS = Path(__file__).parent.parent / "artifacts_schema"


@pytest.mark.parametrize("document,schema", [
    ("config.json", "config"), ("buffer_config.json", "buffer_config"),
    ("visual/aot_config.json", "vision_aot_config"),
    ("visual/buffer_config.json", "vision_buffer_config"), ("visual/graph.json", "vision_graph"),
    ("manifest.json", "manifest"), ("compile_report.json", "compile_report")])
def test_documents_match_their_schemas(vlm_tree, document, schema):
    import jsonschema

    tree = vlm_tree("qwen3_vl", 2)
    jsonschema.validate(json.loads((tree / document).read_text()),
                        json.loads((SCHEMAS / f"{schema}.schema.json").read_text()))


def test_tied_embeddings_and_float16(vlm_checkpoint, tmp_path):
    """Real small Qwen-VLs tie the LM head to the embedding on the outer config (no lm_head
    tensor in the checkpoint); a float16 tree takes the processor's float32 pixels."""
    arch = "qwen2_5_vl_tied"
    ckpt = vlm_checkpoint(arch)
    prompt = "w9 <|vision_start|><|image_pad|><|vision_end|> w8"
    images = [picture(SIZES[arch], 6)]
    trees = {dtype: Path(build_and_compile_vlm(
        ckpt, tmp_path / dtype / "1die", image_sizes=(SIZES[arch],), max_model_len=64,
        dtype=dtype, export_onnx=False, progress=False)) for dtype in ("float32", "float16")}
    with runtime.load(trees["float32"]) as session:
        assert session.generate_multimodal(prompt, images=images, max_new_tokens=8) == \
            hf_generate(ckpt, prompt, images, max_new_tokens=8)
    with runtime.load(trees["float16"]) as session:
        assert len(session.generate_multimodal(prompt, images=images, max_new_tokens=4)) == 4


def test_text_only_prompt_matches_hf(vlm_tree, vlm_checkpoint):
    import torch
    from transformers import AutoModelForImageTextToText

    ids = [5, 17, 3, 99, 42, 7, 11, 150, 23, 64]
    model = AutoModelForImageTextToText.from_pretrained(vlm_checkpoint("qwen3_vl")).eval()
    out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
    with runtime.load(vlm_tree("qwen3_vl", 2)) as session:
        assert session.generate(ids, 8) == out[0, len(ids):].tolist()
        text = " ".join(f"w{i}" for i in ids)  # no images: plain 1-D positions
        assert session.generate_multimodal(text, max_new_tokens=8) == out[0, len(ids):].tolist()
        with pytest.raises(TyllmError, match="generate_multimodal"):
            session.generate([*ids, 202], 2)  # an image pad without its image


def test_speculative_decoding_on_the_language_dies(vlm_tree):
    """Qwen3-VL trees carry language verify graphs (speculative_tokens=3): n-gram proposals and
    the tree as its own draft give the plain greedy tokens after an image and a video, and the
    own draft has every proposal accepted."""
    from tyllm.speculate import DraftModel, Ngram, SpeculationStats
    from tyllm.speculate.greedy import speculative_greedy

    arch = "qwen3_vl"
    images, videos = inputs(arch)
    with runtime.load(vlm_tree(arch, 2)) as session:
        plain = session.generate_multimodal(PROMPT, images=images, videos=videos,
                                            max_new_tokens=12)
        lookup = session.generate_multimodal(PROMPT, images=images, videos=videos,
                                             max_new_tokens=12, speculative=Ngram(lookup_min=1))
        assert lookup == plain
        with runtime.load(vlm_tree(arch, 2)) as same:
            own = session.generate_multimodal(PROMPT, images=images, videos=videos,
                                              max_new_tokens=12, speculative=DraftModel(same))
            assert own == plain
            ids = [5, 17, 3, 99, 42, 7, 11, 150]  # text only: every guess of its own is kept
            stats = SpeculationStats()
            speculative_greedy(session, ids, session.prefill(ids), 9, DraftModel(same),
                               stop_at_eos=False, stats=stats)
            assert stats.proposed > 0 and stats.accepted == stats.proposed


def test_vlm_language_decodes_image_prompts_together(vlm_tree):
    """A VLM tree with language batch sizes [1, 2]: two image prompts prepared in their own
    slots decode in one call per step (Qwen3-VL: deepstack rows, 3-axis positions) and give
    each prompt's own greedy tokens."""
    import torch

    arch = "qwen3_vl"
    tree = vlm_tree(arch, 2)
    prompts = ["w3 <|vision_start|><|image_pad|><|vision_end|> w5 w6",
               "w9 w8 w7 <|vision_start|><|image_pad|><|vision_end|> w4"]
    images = [[picture(SIZES[arch], 3)], [picture(SIZES[arch], 7)]]
    with runtime.load(tree) as session:
        assert session.tree.batch_sizes == [1, 2]
        alone = [session.generate_multimodal(p, images=i, max_new_tokens=10)
                 for p, i in zip(prompts, images, strict=True)]
        ids, logits = [], []
        for slot, (prompt, pictures) in enumerate(zip(prompts, images, strict=True)):
            items = [session.preprocessor.image(p) for p in pictures]
            text, order = session.preprocessor.expand(prompt, items, [])
            ids.append(session.tokenizer.encode(text, add_special_tokens=False))
            session.prepare(slot, ids[-1], order)
            logits.append(session.extend(ids[-1], 0, slot))
        together = [[], []]
        for step in range(10):
            tokens = [int(torch.argmax(x)) for x in logits]
            for out, token in zip(together, tokens, strict=True):
                out.append(token)
            logits = session.decode_rows(tokens, [len(i) + step for i in ids], [0, 1])
    assert together == alone
