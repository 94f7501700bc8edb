"""Real model sizes without a download: a randomly initialised checkpoint with a real model's
dimensions, written shard by shard (never the whole model in memory), then compiled, loaded and
decoded, printing time, peak RSS and disk of each step.

    python scripts/big_model.py make    --shape deepseek-r1-distill-qwen-32b --int4 128 --out W
    python scripts/big_model.py compile --out W --dies 8 --embedding-as-input --seq-lens 1,8
    python scripts/big_model.py decode  --out W --dies 8 --tokens 4

`make` writes W/checkpoint (a tyllm int4 checkpoint with --int4 GROUP, else bfloat16), `compile`
writes W/tree/<N>die, `decode` loads it (threads) and decodes greedily. Each step runs in its own
process; the last line is a JSON record of what it measured. A benchmark, not a test: the 32B
shape needs about 20 GB of disk for the checkpoint and as much again for the tree.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

SHAPES = {  # HF config fields of each shape
    "qwen3-1.7b": dict(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=151936,
        hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, tie_word_embeddings=True, rope_theta=1000000.0,
        rms_norm_eps=1e-6, max_position_embeddings=40960, hidden_act="silu"),
    "deepseek-r1-distill-qwen-32b": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=152064,
        hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
        num_attention_heads=40, num_key_value_heads=8, tie_word_embeddings=False,
        rope_theta=1000000.0, rms_norm_eps=1e-5, max_position_embeddings=131072,
        hidden_act="silu"),
}
WEIGHT_STD = 0.02


def layer_linears(cfg: dict) -> dict[str, tuple[int, int]]:
    """(out, in) of each linear of one decoder layer."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    d = cfg.get("head_dim", h // cfg["num_attention_heads"])
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    return {"self_attn.q_proj": (q, h), "self_attn.k_proj": (kv, h),
            "self_attn.v_proj": (kv, h), "self_attn.o_proj": (h, q),
            "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h), "mlp.down_proj": (h, i)}


def linear_tensors(name: str, shape: tuple[int, int], group: int | None,
                   gen: torch.Generator) -> dict:
    out, inp = shape
    if group is None:
        return {f"{name}.weight": (torch.randn(out, inp, generator=gen) * WEIGHT_STD)
                .to(torch.bfloat16)}
    # Nibbles from 1 to 15 around the zero point 8: weights with zero mean (0 to 15 would give
    # every weight the same -0.5 step bias, which a 64-layer residual stream amplifies to inf).
    low, high = (torch.randint(1, 16, (out, inp // 2), dtype=torch.uint8, generator=gen)
                 for _ in range(2))
    return {f"{name}.qweight": low | (high << 4),
            f"{name}.qzeros": torch.full((out, inp // group), 8, dtype=torch.uint8),
            f"{name}.scales": torch.full((out, inp // group), WEIGHT_STD / 4,
                                         dtype=torch.float16)}


def layer_tensors(cfg: dict, layer: int, group: int | None, gen) -> dict:
    prefix, h = f"model.layers.{layer}.", cfg["hidden_size"]
    tensors = {f"{prefix}input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
               f"{prefix}post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16)}
    for name, shape in layer_linears(cfg).items():
        tensors |= linear_tensors(prefix + name, shape, group, gen)
    if cfg["model_type"] == "qwen2":  # q/k/v biases
        for name in ("q_proj", "k_proj", "v_proj"):
            out = layer_linears(cfg)[f"self_attn.{name}"][0]
            tensors[f"{prefix}self_attn.{name}.bias"] = torch.zeros(out, dtype=torch.bfloat16)
    if cfg["model_type"] == "qwen3":  # per-head q/k norms
        d = cfg["head_dim"]
        tensors[f"{prefix}self_attn.q_norm.weight"] = torch.ones(d, dtype=torch.bfloat16)
        tensors[f"{prefix}self_attn.k_norm.weight"] = torch.ones(d, dtype=torch.bfloat16)
    return tensors


def write_shard(folder: Path, name: str, tensors: dict, index: dict) -> None:
    save_file(tensors, folder / name, metadata={"format": "pt"})
    index |= dict.fromkeys(tensors, name)


def make(shape: str, group: int | None, out: Path, layers: int | None = None) -> dict:
    """The checkpoint, one layer per shard (one layer in memory at a time); `layers` keeps
    only the first few (a model small enough to check against HF)."""
    cfg, folder = dict(SHAPES[shape]), out / "checkpoint"
    cfg["num_hidden_layers"] = layers or cfg["num_hidden_layers"]
    folder.mkdir(parents=True, exist_ok=True)
    gen, index = torch.Generator().manual_seed(0), {}
    v, h = cfg["vocab_size"], cfg["hidden_size"]
    table = (torch.randn(v, h, generator=gen) * WEIGHT_STD).to(torch.bfloat16)
    write_shard(folder, "embed.safetensors", {"model.embed_tokens.weight": table}, index)
    if not cfg["tie_word_embeddings"]:
        head = (torch.randn(v, h, generator=gen) * WEIGHT_STD).to(torch.bfloat16)
        write_shard(folder, "head.safetensors", {"lm_head.weight": head}, index)
    del table
    for layer in range(cfg["num_hidden_layers"]):
        write_shard(folder, f"layer-{layer:03d}.safetensors",
                    layer_tensors(cfg, layer, group, gen), index)
    write_shard(folder, "norm.safetensors",
                {"model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}, index)
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": index}, indent=1))
    write_config(folder, cfg, group)
    write_tokenizer(folder, v)
    return {"checkpoint_bytes": folder_bytes(folder)}


def write_config(folder: Path, cfg: dict, group: int | None) -> None:
    cfg |= {"torch_dtype": "bfloat16", "bos_token_id": 0, "eos_token_id": 1}
    if group is not None:
        cfg["torch_dtype"] = "float16"
        cfg["quantization_config"] = {"quant_method": "tyllm_int4", "bits": 4,
                                      "group_size": group, "zero_point": True,
                                      "source": "random (scripts/big_model.py)"}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))


def write_tokenizer(folder: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(vocab_size)},
                                     unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(folder / "tokenizer.json"))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def compile_tree(out: Path, dies: int, seq_lens: list[int], max_kv: int, dtype: str,
                 embedding_as_input: bool, jobs: int) -> dict:
    from tyllm.build_util import build_and_compile_llm

    tree = out / "tree" / f"{dies}die"
    build_and_compile_llm(out / "checkpoint", tree, max_kv_cache_size=max_kv,
                          seq_len_list=seq_lens, dev_count=dies, dtype=dtype,
                          embedding_as_input=embedding_as_input, export_onnx=False, jobs=jobs,
                          use_cache=False)
    report = json.loads((tree / "compile_report.json").read_text())
    return {"tree_bytes": folder_bytes(tree), "workers": report["workers"],
            "compile_seconds": report["compile_seconds"]}


def decode(out: Path, dies: int, tokens: int) -> dict:
    """Loads the tree, generates `tokens` greedily; with more than 2 tokens, also the decode
    rate (a `tokens` generation minus a 1-token one) against the bandwidth roof: read
    bandwidth over the weight bytes every die reads a step (the dies share this machine's
    memory)."""
    from tyllm import runtime

    prompt = [5, 17, 42, 99, 7, 300, 12, 8]
    start = time.perf_counter()
    with runtime.load(out / "tree" / f"{dies}die", workers="threads") as session:
        loaded = time.perf_counter()
        new = session.generate(prompt, tokens, stop_at_eos=False)
        done = time.perf_counter()
        record = {"load_seconds": loaded - start, "decode_seconds": done - loaded,
                  "tokens": new}
        if tokens > 2:
            record |= decode_rate(session, prompt, tokens)
    return record


def decode_rate(session, prompt: list[int], tokens: int) -> dict:
    from tyllm.bench.roof import decode_weight_bytes, read_bandwidth_gbs
    from tyllm.bench.timing import median_seconds

    one = median_seconds(lambda: session.generate(prompt, 1, stop_at_eos=False), 3)
    many = median_seconds(lambda: session.generate(prompt, tokens, stop_at_eos=False), 3)
    rate = (tokens - 1) / (many - one)
    step_bytes = sum(decode_weight_bytes(session.tree, d) for d in range(session.tree.dies))
    roof = read_bandwidth_gbs(os.cpu_count() or 1) * 1e9 / step_bytes
    return {"decode_tok_s": rate, "bytes_per_step": step_bytes, "roof_tok_s": roof,
            "fraction_of_roof": rate / roof}


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        return int(next(x for x in status if x.startswith("VmHWM")).split()[1]) * 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["make", "compile", "decode"])
    p.add_argument("--out", type=Path, required=True, help="working folder")
    p.add_argument("--shape", choices=list(SHAPES), default="deepseek-r1-distill-qwen-32b")
    p.add_argument("--int4", type=int, default=None, help="AWQ-style int4 group size")
    p.add_argument("--layers", type=int, default=None, help="only the first N layers")
    p.add_argument("--dies", type=int, default=8)
    p.add_argument("--seq-lens", default="1,8")
    p.add_argument("--max-kv", type=int, default=4096)
    p.add_argument("--dtype", default="float16")
    p.add_argument("--embedding-as-input", action="store_true")
    p.add_argument("--jobs", type=int, default=0)
    p.add_argument("--tokens", type=int, default=4)
    args = p.parse_args()
    start = time.perf_counter()
    if args.step == "make":
        record = make(args.shape, args.int4, args.out, args.layers)
    elif args.step == "compile":
        record = compile_tree(args.out, args.dies, [int(m) for m in args.seq_lens.split(",")],
                              args.max_kv, args.dtype, args.embedding_as_input, args.jobs)
    else:
        record = decode(args.out, args.dies, args.tokens)
    record |= {"step": args.step, "seconds": round(time.perf_counter() - start, 1),
               "peak_rss_bytes": peak_rss_bytes()}
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    sys.exit(main())
