"""A compiled VLM tree behind vLLM: LLM.generate with images, an engine started on the VLM
checkpoint itself (compiled at start), and `tyllm serve` chat with an image, equal the tree's own
greedy generate_multimodal (itself checked against HF in test_vlm.py)."""

import base64
import io
import json
import os
import subprocess
import sys

import pytest
from test_vllm_server import free_port, wait_ready
from vllm_jobs import engine, run_batches, run_job
from vlm_models import SIZES, picture

from tyllm import runtime
from tyllm.vllm_ext.tree_model import engine_kwargs

pytestmark = pytest.mark.slow

ARCH = "qwen2_5_vl"
NGRAM = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1,
         "prompt_lookup_max": 3}
ONE = "w5 w6 <|vision_start|><|image_pad|><|vision_end|> w7 w8"
PAD = "<|vision_start|><|image_pad|><|vision_end|>"
TWO = f"{PAD} w1 {PAD} w2"


@pytest.fixture(scope="module")
def tree(vlm_tree):
    return vlm_tree(ARCH, 2)


def expected(tree, prompt, images, tokens):
    with runtime.load(tree) as session:
        return session.generate_multimodal(prompt, images=images, max_new_tokens=tokens)


def test_llm_generate_with_images_and_videos(vlm_tree, tmp_path):
    """Qwen3-VL (timestamped frame pairs, deepstack) under chunked prefill: one image, two
    images (one resized to the compiled size), a video and an image, a video alone; with n-gram
    speculation on the tree's language verify graphs (the second request, which repeats
    tokens, run alone again is speculated)."""
    from PIL import Image

    arch = "qwen3_vl"
    tree, size = vlm_tree(arch, 2), SIZES[arch]
    pictures = [picture(size, 20 + i) for i in range(6)] + [picture((160, 64), 30)]
    paths = []
    for i, image in enumerate(pictures):
        paths.append(str(tmp_path / f"{i}.png"))
        image.save(paths[-1])
    video = "<|vision_start|><|video_pad|><|vision_end|>"
    requests = [{"prompt": ONE, "images": paths[:1]},
                {"prompt": TWO, "images": [paths[6], paths[1]]},
                {"prompt": f"w5 {video} w9 {PAD} w7", "videos": [paths[:3]], "images": [paths[3]]},
                {"prompt": f"{video} w2", "videos": [paths[2:6]]}]
    for r in requests:
        r["sampling"] = {"temperature": 0, "max_tokens": 8, "ignore_eos": True}
    served = engine_kwargs(tree)  # model folder, dies, max_model_len and the tree itself
    kwargs = engine(served["model"], 2, served["max_model_len"], chunked=True,
                    additional_config=served["additional_config"], disable_log_stats=False,
                    speculative_config=NGRAM)
    together, alone = run_batches(tmp_path / "job", kwargs | {"max_num_batched_tokens": 32},
                                  [requests, requests[1:2]])
    assert alone[0]["token_ids"] == together[1]["token_ids"]  # alone, it was speculated
    metrics = json.loads((tmp_path / "job" / "out.json.metrics").read_text())
    assert metrics["vllm:spec_decode_num_drafts"] > 0

    def load(paths):
        return [Image.open(p).convert("RGB") for p in paths]

    with runtime.load(tree) as session:
        for r, got in zip(requests, together, strict=True):
            want = session.generate_multimodal(
                r["prompt"], images=load(r.get("images", [])),
                videos=[load(v) for v in r.get("videos", [])], max_new_tokens=8)
            assert got["token_ids"] == want


def test_engine_start_compiles_a_vlm_checkpoint(tree, vlm_checkpoint, tmp_path):
    """LLM(model=VLM checkpoint, tensor_parallel_size=2) compiles visual/, mrope/ and the
    language dies from additional_config (programs from the cache the `tree` fixture filled),
    then serves an image request with the new tree's own greedy tokens."""
    out = tmp_path / "engine-tree" / "2die"
    options = {"artifacts_path": str(out), "image_sizes": [list(SIZES[ARCH])],
               "modalities": ["image", "video"], "prefill_lens": [16], "kv_windows": [32, 64],
               "batch_sizes": [1]}
    kwargs = engine(vlm_checkpoint(ARCH), 2, 160, chunked=False,
                    additional_config={"tyllm": options})
    image = picture(SIZES[ARCH], 9)
    image.save(tmp_path / "a.png")
    sampling = {"temperature": 0, "max_tokens": 8, "ignore_eos": True}
    got = run_job(tmp_path / "job", kwargs,
                  [{"prompt": ONE, "images": [str(tmp_path / "a.png")], "sampling": sampling}])
    assert (out / "visual").is_dir() and (out / "mrope").is_dir()
    assert got[0]["token_ids"] == expected(out, ONE, [image], 8)


def test_serve_chat_with_an_image(tree, tmp_path):
    import openai

    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}{% if m.content is string %}{{ m.content }}"
                        "{% else %}{% for c in m.content %}{% if c.type == 'text' %}{{ c.text }}"
                        "{% else %}<|vision_start|><|image_pad|><|vision_end|> {% endif %}"
                        "{% endfor %}{% endif %}{% endfor %}")
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "tyllm.cli", "serve", str(tree), "--host", "127.0.0.1",
         "--port", str(port), "--max-num-seqs", "2", "--gpu-memory-utilization", "0.1",
         "--chat-template", str(template)],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1"))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                           max_retries=0, timeout=300)
    image = picture(SIZES[ARCH], 4)
    png = io.BytesIO()
    image.save(png, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    try:
        wait_ready(client, server)
        reply = client.chat.completions.create(
            model=str(tree), max_tokens=6, temperature=0,
            messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "w7 w8"}]}])
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    prompt = "<|vision_start|><|image_pad|><|vision_end|> w7 w8"
    from tyllm.text import decode

    want = decode(tree, expected(tree, prompt, [image], 6))
    assert reply.choices[0].message.content.strip() == want  # incremental detokenizer: " w.."
