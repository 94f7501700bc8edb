"""Benchmark: the compiled tree against HF eager, stock vLLM CPU and onnxruntime, in one run.

    python scripts/bench.py                 # SmolLM2-135M-Instruct fp32, seq lens [1, 8]
    python scripts/bench.py --quick         # fewer decode tokens, same engines
    python scripts/bench.py --model DIR --dies 4 --threads 2 --out docs/bench/mine.json
    python scripts/bench.py --prefill-only  # TTFT at 41 and 512 tokens, the prefill matmul
    python scripts/bench.py --serving-only  # 1-8 concurrent requests through vLLM
    python scripts/bench.py --formats-only  # float32 / float16 / int4 trees against their roofs
    python scripts/bench.py --load-only TREE [TREE ...]  # peak RSS of loading compiled trees
    python scripts/bench.py --prefix-only   # TTFT with prefix caching on and off through vLLM
    python scripts/bench.py --speculative-only  # n-gram speculative decoding against plain decode
    python scripts/bench.py --distributed-only  # 3 dies as torchrun ranks (2 + 1) vs processes

Same model, prompt, dtype (fp32) and thread count for every engine. Measures time to first token
and decode tokens/s for: the tree at 1 die, at each N of --dies (threads and processes workers),
the 1-die tree compiled with a --long-kv cache (decode reads the whole static cache: this shows
what that costs), HF transformers eager `generate`, stock vLLM CPU `LLM.generate` and
onnxruntime on the 1-die tree's ONNX graphs; compile time per graph and in total, peak RSS while
compiling (above the process's RSS after imports); peak RSS while loading and running each tree
against its parameter and KV bytes; and the bandwidth roof: weight bytes read
per decode token over this machine's measured copy bandwidth. Prints a table and writes JSON
(ratios are what to quote: absolute times drift on shared machines). What the frameworks print
while it lowers the prefill matmul goes to $TYLLM_CACHE/logs/bench-matmul.log (default
~/.cache/tyllm), as a compile's goes to its compile.log.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path
from statistics import median

from tyllm.bench.compile_cost import compile_cost
from tyllm.bench.concurrency import (
    CONCURRENCY,
    int4_checkpoint,
    kv_bytes_per_slot,
    tree_throughput,
    vllm_throughput,
)
from tyllm.bench.engines import bench_hf, bench_ort, bench_tree, bench_vllm
from tyllm.bench.formats import (
    DECODE_ROUNDS,
    QUICK_ROUNDS,
    compile_formats,
    format_engines,
    format_ratios,
    format_rows,
    format_serving,
    format_table,
    paired_runs,
    with_roofs,
)
from tyllm.bench.llama_cpp import anchor_engines, anchor_rows
from tyllm.bench.load_memory import load_memory
from tyllm.bench.matmul import prefill_matmuls
from tyllm.bench.prefill import decode_at_history, ttft_hf, ttft_ort, ttft_tree, ttft_vllm
from tyllm.bench.prefix_cache import (
    SYSTEM_TOKENS,
    prefix_cache_run,
    print_row,
    stock_engine,
    summary,
    tree_engine,
)
from tyllm.bench.report import prefill_ratios, ratios, serving_ratios, table, write_report
from tyllm.bench.roof import copy_bandwidth_gbs, decode_weight_bytes, read_bandwidth_gbs
from tyllm.bench.speculative import (
    best,
    print_rates,
    speculative_rates,
    tyllm_vllm_rates,
    vllm_rates,
)
from tyllm.runtime.tree import Tree
from tyllm.text import encode_prompt
from tyllm.tools.smollm2 import prepare_smollm2

PROMPT = "Explain in a few sentences why the sky is blue."
# the recommended prefill set and KV windows for a 1024-position cache (docs/PERFORMANCE.md)
PREFILL_LENS = [1, 16, 64, 256]
PREFILL_KV = 1024
PREFILL_WINDOWS = [256, 512]  # and 1024: a chunk attends over at most twice its history
# prefill trees measured: name -> (seq lens, KV windows or None for the default ladder); the
# second is the issue's example set, with the default windows
PREFILL_SETS = {"prefill": (PREFILL_LENS, PREFILL_WINDOWS), "prefill-128": ([1, 16, 128], None)}
TTFT_TOKENS = [41, 512]
HISTORIES = [100, 3000]
SERVING_KV = 1024  # the serving tree: batch sizes for up to 8 concurrent requests
SERVING_BATCHES = [1, 2, 4, 8]  # what an engine with max_num_seqs=8 compiles
SERVING_TOKENS = 128
SPECULATIVE_K = 8  # the verify width of the speculative tree: the best k measured (PERFORMANCE.md)
SPECULATIVE_KS = [4, 8]  # proposals per step tried on it
SPECULATIVE_LOOKUP = (3, 4)  # n-gram sizes looked up, smallest and largest
PREFIX_KV = 2048  # the prefix-cache tree: the recommended prefill set, room for the system prompt


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="HF checkpoint (default: SmolLM2-135M-Instruct)")
    p.add_argument("--dies", default="3,4", help="the N of the N-die trees, e.g. 3,4")
    p.add_argument("--long-kv", type=int, default=4096,
                   help="KV cache size of the long-cache 1-die tree (0: skip it)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every engine")
    p.add_argument("--max-kv", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="16 new tokens")
    p.add_argument("--skip", default="",
                   help="engines to skip: vllm,hf,ort,processes,int4 (the AWQ serving tree), "
                        "formats (the format table), serving (the format table's serving rows), "
                        "llama.cpp (its anchor rows), prefix (the prefix-cache rows), "
                        "speculative (the speculative-decoding rows)")
    p.add_argument("--prefill-only", action="store_true",
                   help="only the prefill tree's TTFT against stock vLLM and the prefill matmul")
    p.add_argument("--serving-only", action="store_true",
                   help="only the serving rows (1, 2, 4, 8 concurrent requests through vLLM)")
    p.add_argument("--formats-only", action="store_true",
                   help="only the format table: float32, float16 and AWQ int4 trees at 1 die "
                        "against their own roofs, TTFT, and serving against stock vLLM")
    p.add_argument("--prefix-only", action="store_true",
                   help="only the prefix-cache rows: a shared system prompt's TTFT with vLLM's "
                        "prefix caching on and off, tyllm's engine and stock vLLM CPU")
    p.add_argument("--speculative-only", action="store_true",
                   help="only the speculative-decoding rows: n-gram speculation against plain "
                        "decode on a copy task and an open-ended one, tyllm and stock vLLM CPU")
    p.add_argument("--distributed-only", action="store_true",
                   help="only the distributed row: the 3-die tree's dies as the ranks of two "
                        "torchrun launches on loopback (2 + 1) against processes")
    p.add_argument("--load-only", nargs="+", type=Path, metavar="TREE",
                   help="only the peak RSS of loading and running these compiled <N>die trees "
                        "(LLM or VLM), as threads and as processes")
    p.add_argument("--work", default=None, help="folder for the compiled trees (default: temp)")
    p.add_argument("--out", default="bench.json", help="JSON report path")
    return p.parse_args()


def die_counts(args) -> list[int]:
    counts = {int(n) for n in args.dies.split(",") if n.strip()}
    if any(n < 1 for n in counts):
        raise SystemExit(f"--dies {args.dies}: die counts are positive integers, e.g. 3,4")
    return sorted(counts - {1})


def compile_trees(args, model: Path, work: Path) -> dict:
    costs = {}
    for dies in [1, *die_counts(args)]:
        costs[str(dies)] = compile_cost(model, work / f"{dies}die", dies, args.max_kv, [1, 8],
                                        args.threads)
    if args.long_kv:
        costs[f"1-kv{args.long_kv}"] = compile_cost(model, long_kv_tree(args, work), 1,
                                                    args.long_kv, [1, 8], args.threads)
    costs |= compile_prefill_trees(args, model, work)
    costs["1-serving"] = compile_cost(model, serving_tree(work), 1, SERVING_KV, [1, 8],
                                      args.threads, SERVING_BATCHES)
    for name, cost in costs.items():
        above, die = cost["peak_rss_above_imports_bytes"], cost["die0_weight_bytes"]
        workers = ", ".join(f"{w['programs']} in {w['busy_seconds']:.0f} s"
                            for w in cost["workers"])
        print(f"compiled tree {name}: {cost['total_s']:.1f} s, peak RSS above imports "
              f"{above / 2**20:.0f} MiB = {above / die:.2f}x die 0's weights; programs per "
              f"process: {workers}", flush=True)
    return costs


def long_kv_tree(args, work: Path) -> Path:
    return work / f"kv{args.long_kv}" / "1die"


def prefill_tree(work: Path, name: str = "prefill") -> Path:
    return work / name / "1die"


def compile_prefill_trees(args, model: Path, work: Path) -> dict:
    return {f"1-{name}": compile_cost(model, prefill_tree(work, name), 1, PREFILL_KV, lens,
                                      args.threads, kv_windows=windows)
            for name, (lens, windows) in PREFILL_SETS.items()}


def prefill_sets() -> dict:
    return {name: {"seq_lens": lens, "kv_windows": windows, "max_kv": PREFILL_KV}
            for name, (lens, windows) in PREFILL_SETS.items()}


def serving_tree(work: Path) -> Path:
    return work / "serving" / "1die"


def serving(args, model: Path, work: Path, ids: list[int]) -> dict:
    """Aggregate tok/s by concurrent requests through vLLM: tyllm's engine on the serving tree
    (batch sizes SERVING_BATCHES) and on the batch-1 tree of the same shape, stock vLLM CPU in
    fp32 and at its bf16 default."""
    tokens = 16 if args.quick else SERVING_TOKENS
    skip = set(filter(None, args.skip.split(",")))
    rates = {"tyllm-batched": tree_throughput(serving_tree(work), ids, tokens, args.threads)}
    if "int4" not in skip:
        int4 = int4_serving_tree(args, model, work)
        rates["tyllm-batched-int4"] = tree_throughput(int4, ids, tokens, args.threads)
    if "vllm" not in skip:
        for dtype, name in (("float32", "vllm-cpu"), ("bfloat16", "vllm-cpu-bf16")):
            rates[name] = vllm_throughput(model, ids, tokens, args.threads, SERVING_KV, dtype)
    for name, by_n in rates.items():
        print(f"serving {name}: " + ", ".join(f"{n} requests {r:.1f} tok/s"
                                              for n, r in by_n.items()), flush=True)
    slot = kv_bytes_per_slot(serving_tree(work))
    print(f"serving KV cache: {slot / 2**20:.1f} MiB per sequence, "
          f"{slot * max(CONCURRENCY) / 2**20:.0f} MiB for {max(CONCURRENCY)}", flush=True)
    return {"tok_s_by_concurrency": rates, "new_tokens": tokens, "max_kv": SERVING_KV,
            "batch_sizes": SERVING_BATCHES, "concurrency": CONCURRENCY,
            "kv_bytes_per_slot": slot,
            "kv_bytes_per_batch": {b: b * slot for b in SERVING_BATCHES}}


def int4_serving_tree(args, model: Path, work: Path) -> Path:
    """The serving tree of an AWQ W4A16 checkpoint of the model (quantized here, group 64)."""
    tree = work / "serving-int4" / "1die"
    if not (tree / "config.json").is_file():
        int4 = int4_checkpoint(model, work)
        cost = compile_cost(int4, tree, 1, SERVING_KV, [1, 8], args.threads, SERVING_BATCHES)
        print(f"compiled tree int4-serving: {cost['total_s']:.1f} s", flush=True)
    return tree


def history_and_prefill(args, model: Path, work: Path, ids: list[int]) -> dict:
    """Decode cost at short and long histories (the long-KV tree against the short one), TTFT
    at TTFT_TOKENS for every engine, and the prefill matmul against torch's."""
    decode = {"tyllm-1die": decode_at_history(work / "1die", HISTORIES[:1], ids)}
    if args.long_kv:
        decode[f"tyllm-1die-kv{args.long_kv}"] = decode_at_history(long_kv_tree(args, work),
                                                                   HISTORIES, ids)
    default_lens = long_kv_tree(args, work) if args.long_kv else None
    ttft, matmuls = prefill_engines(args, model, work, ids, default_lens)
    for name, ms in decode.items():
        print(f"decode {name}: " + ", ".join(f"history {n}: {t:.1f} ms/token"
                                             for n, t in ms.items()), flush=True)
    print_prefill(ttft, matmuls)
    return {"decode_ms_at_history": decode, "ttft_s": ttft, "prefill_matmul": matmuls,
            "prefill_sets": prefill_sets()}


def prefill_engines(args, model: Path, work: Path, ids: list[int],
                    default_lens: Path | None) -> tuple[dict, dict]:
    """TTFT at TTFT_TOKENS for every engine (`default_lens`: a tree with seq lens [1, 8] too),
    and the prefill matmul against torch's."""
    skip = set(filter(None, args.skip.split(",")))
    ttft = {f"tyllm-1die-{name}": ttft_tree(prefill_tree(work, name), TTFT_TOKENS, ids)
            for name in PREFILL_SETS}
    if default_lens is not None:
        ttft["tyllm-1die-default-lens"] = ttft_tree(default_lens, TTFT_TOKENS, ids)
    if "hf" not in skip:
        ttft["hf-eager"] = ttft_hf(model, TTFT_TOKENS, ids, args.threads)
    if "ort" not in skip and default_lens is not None:
        ttft["onnxruntime"] = ttft_ort(default_lens, TTFT_TOKENS, ids, args.threads)
    if "vllm" not in skip:
        ttft["vllm-cpu"] = ttft_vllm(model, TTFT_TOKENS, ids, args.threads)
        ttft["vllm-cpu-bf16"] = ttft_vllm(model, TTFT_TOKENS, ids, args.threads, "bfloat16")
    config = Tree(prefill_tree(work)).config["hf_config"]
    matmuls = prefill_matmuls(config["hidden_size"], config["intermediate_size"],
                              [PREFILL_LENS[1], PREFILL_LENS[-1]], args.threads)
    return ttft, matmuls


def print_prefill(ttft: dict, matmuls: dict) -> None:
    for name, t in ttft.items():
        print(f"TTFT {name}: " + ", ".join(f"{n} tokens {s * 1e3:.0f} ms" for n, s in t.items()),
              flush=True)
    for name, m in matmuls.items():
        print(f"prefill matmul {name} ({m['rows']}x{m['in']} @ {m['in']}x{m['out']}): tyllm "
              f"{m['tyllm_gflops']:.0f} GFLOP/s, {m['fraction_of_torch']:.0%} of torch's "
              f"{m['torch_gflops']:.0f}", flush=True)


def load_memories(args, work: Path) -> dict:
    """Peak RSS of loading and running each tree against its parameters plus KV caches."""
    skip = set(filter(None, args.skip.split(",")))
    runs = [("1", "threads")] + [(str(n), w) for n in die_counts(args)
                                 for w in ("threads", "processes") if w not in skip]
    return {f"{dies}die-{workers}": loaded(work / f"{dies}die", workers)
            for dies, workers in runs}


def loaded(tree: Path, workers: str) -> dict:
    m = load_memory(tree, workers)
    print(f"loaded tree {tree} ({workers}): peak RSS above imports "
          f"{m['peak_rss_above_imports_bytes'] / 2**20:.0f} MiB for "
          f"{(m['param_bytes'] + m['kv_bytes']) / 2**20:.0f} MiB of parameters + KV "
          f"({m['over_params_plus_kv']:.2f}x)", flush=True)
    return m


def load_only(args) -> None:
    memories = {f"{tree}-{workers}": loaded(tree, workers) for tree in args.load_only
                for workers in ("threads", "processes")}
    write_report(Path(args.out), {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "load_memory": memories})


def run_engines(args, model: Path, work: Path, prompt: list[int], n: int) -> dict:
    skip = set(filter(None, args.skip.split(",")))
    speeds = {"tyllm-1die": bench_tree(work / "1die", prompt, n, "threads", "tyllm-1die")}
    for dies in die_counts(args):
        for workers in ("threads", "processes"):
            if workers not in skip:
                label = f"tyllm-{dies}die-{workers}"
                speeds[label] = bench_tree(work / f"{dies}die", prompt, n, workers, label)
    if args.long_kv:
        label = f"tyllm-1die-kv{args.long_kv}"
        speeds[label] = bench_tree(long_kv_tree(args, work), prompt, n, "threads", label)
    if "hf" not in skip:
        speeds["hf-eager"] = bench_hf(model, prompt, n, args.threads)
    if "ort" not in skip:
        speeds["onnxruntime"] = bench_ort(work / "1die", prompt, n, args.threads)
    if "vllm" not in skip:
        speeds["vllm-cpu"] = bench_vllm(model, prompt, n, args.threads)
    for name, s in speeds.items():
        print(f"{name}: TTFT {s.ttft_s * 1e3:.1f} ms, decode {s.decode_tok_s:.1f} tok/s",
              flush=True)
    return speeds


def prefill_only(args, model: Path, work: Path, prompt: list[int]) -> None:
    costs = compile_prefill_trees(args, model, work)
    ttft, matmuls = prefill_engines(args, model, work, prompt, None)
    print_prefill(ttft, matmuls)
    summary = prefill_ratios({"decode_ms_at_history": {}, "ttft_s": ttft}, args.long_kv)
    for key, value in summary.items():
        print(f"{key}: {value:.2f}")
    write_report(Path(args.out), {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": model.name, "dtype": "float32", "threads": args.threads,
        "compile": costs, "ttft_s": ttft, "prefill_matmul": matmuls,
        "prefill_sets": prefill_sets(), "ratios": summary})


def serving_only(args, model: Path, work: Path, prompt: list[int]) -> None:
    cost = compile_cost(model, serving_tree(work), 1, SERVING_KV, [1, 8], args.threads,
                        SERVING_BATCHES)
    served = serving(args, model, work, prompt)
    summary = serving_ratios(served)
    for key, value in summary.items():
        print(f"{key}: {value:.2f}")
    write_report(Path(args.out), {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": model.name, "dtype": "float32", "threads": args.threads,
        "prompt_tokens": len(prompt), "compile": {"1-serving": cost}, "serving": served,
        "ratios": summary})


def prefix_tree(work: Path) -> Path:
    return work / "prefix" / "1die"


def prefix_cache(args, model: Path, work: Path) -> dict:
    """The shared-system-prompt workload through vLLM with prefix caching on and off: tyllm's
    engine on a 1-die tree of the recommended prefill set, and stock vLLM CPU fp32."""
    skip = set(filter(None, args.skip.split(",")))
    cost = compile_cost(model, prefix_tree(work), 1, PREFIX_KV, PREFILL_LENS, args.threads,
                        kv_windows=[*PREFILL_WINDOWS, 1024])
    rows = {"tyllm-1die": summary(prefix_cache_run(tree_engine(prefix_tree(work)), model,
                                                   args.threads, stock=False))}
    if "vllm" not in skip:
        rows["vllm-cpu"] = summary(prefix_cache_run(stock_engine(model, PREFIX_KV), model,
                                                    args.threads, stock=True))
    for name, row in rows.items():
        print_row(name, row)
    return {"rows": rows, "system_tokens": SYSTEM_TOKENS, "max_kv": PREFIX_KV,
            "seq_lens": PREFILL_LENS, "compile": cost}


def prefix_only(args, model: Path, work: Path) -> None:
    write_report(Path(args.out), {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": model.name, "dtype": "float32", "threads": args.threads,
        "prefix_cache": prefix_cache(args, model, work)})


def speculative_tree(work: Path) -> Path:
    return work / "speculative" / "1die"


def speculative(args, model: Path, work: Path) -> dict:
    """n-gram speculation against plain decode on a 1-die tree with verify graphs (the
    recommended prefill set), and the same tasks through stock vLLM CPU with its own."""
    skip = set(filter(None, args.skip.split(",")))
    tokens = 64 if args.quick else 160
    cost = compile_cost(model, speculative_tree(work), 1, 1024, PREFILL_LENS, args.threads,
                        kv_windows=PREFILL_WINDOWS, speculative_tokens=SPECULATIVE_K)
    rows = {"tyllm-1die": speculative_rates(speculative_tree(work), model, tokens,
                                            SPECULATIVE_KS, SPECULATIVE_LOOKUP),
            "tyllm-1die-vllm": tyllm_vllm_rates(speculative_tree(work), model, tokens,
                                                SPECULATIVE_K, SPECULATIVE_LOOKUP,
                                                args.threads)}
    if "vllm" not in skip:
        rows["vllm-cpu"] = vllm_rates(model, tokens, SPECULATIVE_K, SPECULATIVE_LOOKUP,
                                      args.threads)
    for name, result in rows.items():
        print(f"{name}:", flush=True)
        print_rates(result)
    mine = rows["tyllm-1die"]
    ratios = {f"speculative_{task}_over_plain": r[best(mine["copy"])]["decode_tok_s"]
              / r["plain"]["decode_tok_s"] for task, r in mine.items()}
    return {"rows": rows, "ratios": ratios, "new_tokens": tokens, "lookup": SPECULATIVE_LOOKUP,
            "verify_width": SPECULATIVE_K + 1, "compile": cost}


def speculative_only(args, model: Path, work: Path) -> None:
    result = speculative(args, model, work)
    for key, value in result["ratios"].items():
        print(f"{key}: {value:.2f}")
    write_report(Path(args.out), {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": model.name, "dtype": "float32", "threads": args.threads,
        "speculative": result})


def formats(args, model: Path, work: Path, prompt: list[int], new_tokens: int) -> dict:
    """The format table: decode and TTFT of each format's tree against its own roof (read
    bandwidth over the bytes a step reads); serving at 1-8 requests beside stock vLLM's bf16
    and fp32 unless `serving` is skipped."""
    skip = set(filter(None, args.skip.split(",")))
    costs = compile_formats(model, work, args.threads, "serving" not in skip)
    anchors = {}
    if args.model is None and "llama.cpp" not in skip:  # the packaged GGUF is SmolLM2's
        anchors = anchor_engines(work, prompt, new_tokens, args.threads)
    runs = paired_runs(format_engines(work, prompt, new_tokens) | anchors,
                       QUICK_ROUNDS if args.quick else DECODE_ROUNDS, args.threads)
    rows = format_rows(work, runs, TTFT_TOKENS, prompt)
    rows = with_roofs(rows | (anchor_rows(work, runs, prompt) if anchors else {}))
    print(format_table(rows))
    readings = [r["read_bandwidth_gbs"] for row in rows.values() for r in row["runs"]]
    result = {"read_bandwidth_gbs": median(readings), "read_bandwidth_readings_gbs": readings,
              "rows": rows, "compile": costs}
    if "serving" not in skip:
        tokens = 16 if args.quick else SERVING_TOKENS
        rates = format_serving(work, prompt, tokens, args.threads)
        if "vllm" not in skip:
            for dtype, name in (("float32", "vllm-cpu"), ("bfloat16", "vllm-cpu-bf16")):
                rates[name] = vllm_throughput(model, prompt, tokens, args.threads,
                                              SERVING_KV, dtype)
        for name, by_n in rates.items():
            print(f"serving {name}: " + ", ".join(f"{n} requests {r:.1f} tok/s"
                                                  for n, r in by_n.items()), flush=True)
        result["serving"] = {"tok_s_by_concurrency": rates, "new_tokens": tokens}
    result["ratios"] = format_ratios(result)
    for key, value in result["ratios"].items():
        print(f"{key}: {value:.2f}")
    return result


def formats_only(args, model: Path, work: Path, prompt: list[int], new_tokens: int) -> None:
    write_report(Path(args.out), {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": model.name, "threads": args.threads, "prompt_tokens": len(prompt),
        "new_tokens": new_tokens, "formats": formats(args, model, work, prompt, new_tokens)})


def distributed_only(args, model: Path, work: Path, prompt: list[int]) -> None:
    from tyllm.bench.distributed import distributed_rates

    cost = compile_cost(model, work / "3die", 3, args.max_kv, [1, 8], args.threads)
    result = distributed_rates(work / "3die", prompt, work / "distributed", [2, 1])
    for kind in ("processes", "distributed"):
        print(f"{kind}: {result[kind]['ms_per_token']:.1f} ms/token", flush=True)
    received = result["distributed"]["bytes_received_per_token_per_die"]
    print(f"distributed/processes: {result['distributed_over_processes']:.2f}; all-reduce bytes "
          f"received per token per die: {received:.0f}")
    write_report(Path(args.out), {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": model.name, "dtype": "float32", "threads": args.threads,
        "distributed": result | {"compile": cost}})


def main() -> None:
    args = parse_args()
    if args.load_only:
        return load_only(args)
    model = Path(args.model) if args.model else prepare_smollm2()
    work = Path(args.work or tempfile.mkdtemp(prefix="tyllm-bench-"))
    new_tokens = 16 if args.quick else args.new_tokens
    prompt = encode_prompt(model, PROMPT)
    if args.serving_only:
        return serving_only(args, model, work, prompt)
    if args.prefill_only:
        return prefill_only(args, model, work, prompt)
    if args.formats_only:
        return formats_only(args, model, work, prompt, new_tokens)
    if args.prefix_only:
        return prefix_only(args, model, work)
    if args.speculative_only:
        return speculative_only(args, model, work)
    if args.distributed_only:
        return distributed_only(args, model, work, prompt)
    costs = compile_trees(args, model, work)
    memories = load_memories(args, work)
    speeds = run_engines(args, model, work, prompt, new_tokens)
    prefill = history_and_prefill(args, model, work, prompt)
    served = serving(args, model, work, prompt)
    skip = set(args.skip.split(","))
    by_format = formats(args, model, work, prompt, new_tokens) if "formats" not in skip else None
    prefix = prefix_cache(args, model, work) if "prefix" not in skip else None
    speculation = speculative(args, model, work) if "speculative" not in skip else None
    weight_bytes = decode_weight_bytes(Tree(work / "1die"))
    bandwidth = copy_bandwidth_gbs(args.threads)
    roof_tok_s = bandwidth * 1e9 / weight_bytes
    print(table(speeds, roof_tok_s))
    summary = (ratios(speeds, roof_tok_s) | prefill_ratios(prefill, args.long_kv)
               | serving_ratios(served))
    for key, value in summary.items():
        print(f"{key}: {value:.2f}")
    write_report(Path(args.out), {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": model.name, "dtype": "float32", "threads": args.threads,
        "max_kv_cache_size": args.max_kv, "seq_len_list": [1, 8], "prompt_tokens": len(prompt),
        "new_tokens": new_tokens, "speeds": {k: s.row() for k, s in speeds.items()},
        "roof": {"copy_bandwidth_gbs": bandwidth, "decode_weight_bytes": weight_bytes,
                 "roof_tok_s": roof_tok_s,
                 "read_only_bandwidth_gbs": read_bandwidth_gbs(args.threads)},
        "long_kv_cache_size": args.long_kv, "compile": costs, "load_memory": memories,
        "history_and_prefill": prefill, "serving": served, "formats": by_format,
        "prefix_cache": prefix, "speculative": speculation,
        "ratios": summary})


if __name__ == "__main__":
    main()
