"""The `tyllm` command line: parses arguments and calls the library, nothing else."""

import argparse
import sys

from tyllm.backends import DEFAULT as DEFAULT_BACKEND
from tyllm.backends import REGISTRY
from tyllm.errors import DieFailure, TyllmError
from tyllm.runtime.worker_kinds import RUN_WORKER_NAMES, WORKER_NAMES
from tyllm.tools.arg_types import int_list, positive_int


def add_compile(sub) -> None:
    p = sub.add_parser("compile", help="compile a HF checkpoint into a per-die artifact tree")
    p.add_argument("model", help="HF checkpoint folder (config.json, safetensors, tokenizer)")
    p.add_argument("out", help="artifact folder to write, e.g. Qwen3-1.7B-AOT/4die")
    p.add_argument("--dies", type=int, default=1, help="number of dies (tensor parallel)")
    p.add_argument("--seq-lens", type=int_list, default=[1, 8], help="graph lengths, e.g. 1,8")
    p.add_argument("--max-kv", type=int, default=4096, help="KV cache size in tokens")
    p.add_argument("--kv-windows", type=int_list, default=None,
                   help="history lengths each graph is compiled for, e.g. 256,1024 (default: "
                        "256, 1024, 4096... below --max-kv; the full --max-kv is always built)")
    p.add_argument("--batch-sizes", type=int_list, default=[1],
                   help="sequences per decode call, e.g. 1,4 (batch 1 is always built)")
    p.add_argument("--speculative-tokens", type=int, default=0, metavar="K",
                   help="verify graphs of K + 1 rows for speculative decoding (0: none)")
    p.add_argument("--embedding-as-input", action="store_true",
                   help="graphs take embeddings; the runtime does the lookup")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--threads", type=int, default=0, help="cores per compiled graph (0: all)")
    p.add_argument("--jobs", type=int, default=0,
                   help="worker processes compiling programs in parallel (0: one per core)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX twin of each graph")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no final line")
    p.add_argument("--verbose", action="store_true",
                   help="show framework output live (otherwise it goes to the tree's compile.log)")
    p.add_argument("--no-cache", action="store_true",
                   help="compile every program anew and keep none (see `tyllm cache`)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, choices=sorted(REGISTRY),
                   help=f"the backend to compile for (default {DEFAULT_BACKEND})")


def add_run(sub) -> None:
    p = sub.add_parser("run", help="generate greedily from a compiled tree on emulated dies")
    p.add_argument("artifacts", help="the <N>die folder written by `tyllm compile`")
    p.add_argument("--prompt", default=None, help="the prompt (required without --chat)")
    p.add_argument("--chat", action="store_true",
                   help="a conversation: one user turn per line of standard input; each turn "
                        "reuses the KV of the conversation so far")
    p.add_argument("--system", default=None, help="with --chat: a system prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--workers", default="threads", choices=RUN_WORKER_NAMES,
                   help="dies as threads, as processes of this host, or as the ranks of a "
                        "torchrun job across hosts (distributed; docs/ARCHITECTURE.md)")
    p.add_argument("--dies", type=int, default=None, help="expected die count (checked)")
    p.add_argument("--raw", action="store_true", help="do not apply the chat template")
    p.add_argument("--image", action="append", default=[],
                   help="an image for a VLM tree (repeatable)")
    p.add_argument("--video", action="append", default=[],
                   help="a video for a VLM tree: a folder of frames or comma-separated frame "
                        "files (repeatable)")
    p.add_argument("--video-fps", type=float, default=2.0, help="frame rate of --video frames")
    p.add_argument("--speculate", default=None, metavar="ngram|DRAFT_TREE",
                   help="speculative decoding (the tree needs verify graphs: tyllm compile "
                        "--speculative-tokens K): n-gram prompt lookup, or a draft model's "
                        "compiled tree; the tokens are the same")
    p.add_argument("--speculative-tokens", type=int, default=None, metavar="K",
                   help="tokens proposed per step (default: the tree's verify width)")


def add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check hashes and each graph against onnxruntime")
    p.add_argument("artifacts", help="the <N>die folder written by `tyllm compile`")


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="where a compiled tree departs from HF: per layer and "
                                       "die, then teacher-forced logits")
    p.add_argument("artifacts", help="the <N>die folder written by `tyllm compile`")
    p.add_argument("--model", required=True,
                   help="the HF checkpoint (float, or the int4 one the tree was compiled from)")
    p.add_argument("--prompt", default=None, help="prompt text (default: a short question)")
    p.add_argument("--tokens", default=None,
                   help="a file of prompt token ids (JSON list or whitespace separated)")
    p.add_argument("--image", default=None,
                   help="the image of a VLM tree's prompt (its vision tower is compared too)")
    p.add_argument("--new-tokens", type=positive_int, default=8,
                   help="tokens HF generates; the tree is fed them (teacher forced)")
    p.add_argument("--workers", default="threads", choices=WORKER_NAMES)
    p.add_argument("--dies", type=int, default=None, help="expected die count (checked)")
    p.add_argument("--raw", action="store_true", help="do not apply the chat template")
    p.add_argument("--json", default=None, help="write every number to this JSON file")
    p.add_argument("--plot", default=None, help="write cosine / SQNR by layer to this PNG")
    p.add_argument("--min-cosine", type=float, default=None, help="override the cosine threshold")
    p.add_argument("--min-sqnr", type=float, default=None, help="override the SQNR threshold (dB)")
    p.add_argument("--min-top1", type=float, default=None,
                   help="override the top-1 agreement threshold")


def add_doctor(sub) -> None:
    p = sub.add_parser("doctor", help="check this installation (and optionally a tree)")
    p.add_argument("artifacts", nargs="?", default=None,
                   help="an artifact tree whose versions and hashes to check")


def add_cache(sub) -> None:
    p = sub.add_parser("cache", help="where compiled programs are kept, their size; --clear")
    p.add_argument("--clear", action="store_true", help="remove every kept program")


def add_prepare(sub) -> None:
    p = sub.add_parser("prepare-smollm2",
                       help="convert the packaged SmolLM2-135M-Instruct GGUF to a HF folder")
    p.add_argument("--out", default=None, help="destination (default: ~/.cache/tyllm/...)")


def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="perplexity and next-token accuracy: float, round-to-nearest "
                                    "int4, AWQ, compiled tree, served model")
    p.add_argument("model", help="the float HF checkpoint folder")
    p.add_argument("--awq", default=None,
                   help="an int4 checkpoint of it (AutoAWQ GEMM, compressed-tensors W4A16 or "
                        "tyllm int4), scored dequantized in HF")
    p.add_argument("--tree", default=None, help="a compiled <N>die tree to score on the emulator")
    p.add_argument("--rtn-group-size", type=int, default=None,
                   help="group size of the round-to-nearest baseline (default: the AWQ one)")
    p.add_argument("--text", action="append", default=None,
                   help="held-out .txt/.jsonl file (repeatable; default: CPython doc prose)")
    p.add_argument("--blocks", type=int, default=16, help="held-out blocks")
    p.add_argument("--block-len", type=int, default=256, help="tokens per block")
    p.add_argument("--json", default=None, help="also write the scores to this JSON file")
    p.add_argument("--api", default=None,
                   help="also score a served model: its OpenAI /v1 URL (tyllm/vllm serve)")
    p.add_argument("--api-model", default=None, help="served model name (default: MODEL)")
    p.add_argument("--api-key", default="EMPTY", help="API key of the server")
    p.add_argument("--probe-stride", type=positive_int, default=16,
                   help="next-token accuracy probes every N tokens of a block")


def add_serve(sub) -> None:
    p = sub.add_parser("serve", add_help=False,
                       help="vLLM's OpenAI-compatible server on emulated dies (vLLM flags pass "
                            "through)")
    p.add_argument("serve_args", nargs=argparse.REMAINDER)


COMPILE_FLAGS = {"dev_count": "--dies", "max_kv_cache_size": "--max-kv",
                 "seq_len_list": "--seq-lens", "kv_windows": "--kv-windows",
                 "batch_size_list": "--batch-sizes", "jobs": "--jobs", "dtype": "--dtype",
                 "backend": "--backend", "num_threads": "--threads",
                 "speculative_tokens": "--speculative-tokens"}  # request field -> flag


def run_compile(args) -> None:
    from tyllm.compile.llm import compile_llm
    from tyllm.compile.request import CompileRequest

    print(compile_llm(CompileRequest(
        args.model, args.out, max_kv_cache_size=args.max_kv, seq_len_list=args.seq_lens,
        dev_count=args.dies, embedding_as_input=args.embedding_as_input, dtype=args.dtype,
        num_threads=args.threads, export_onnx=not args.no_onnx, progress=not args.quiet,
        verbose=args.verbose, use_cache=not args.no_cache, kv_windows=args.kv_windows,
        batch_size_list=args.batch_sizes, backend=args.backend, jobs=args.jobs,
        speculative_tokens=args.speculative_tokens, options=COMPILE_FLAGS)))


def run_run(args) -> None:
    from tyllm import runtime
    from tyllm.text import decode, encode_prompt

    if args.prompt is None and not args.chat:
        raise TyllmError("Give --prompt TEXT, or --chat to talk turn by turn on standard input.")
    with runtime.load(args.artifacts, workers=args.workers, dies=args.dies) as session, \
            draft_session(args) as draft:
        root = session.tree.root
        if args.chat:
            run_chat(session, args)
            return
        if args.image or args.video:
            print(decode(root, generate_multimodal(session, args)))
            return
        ids = encode_prompt(root, args.prompt, chat=not args.raw)
        print(decode(root, session.generate(ids, args.max_new_tokens,
                                            speculative=speculation(args, draft))))


def draft_session(args):
    """The draft model's session for --speculate DRAFT_TREE, else nothing to open."""
    from contextlib import nullcontext

    from tyllm import runtime

    if args.speculate in (None, "ngram"):
        return nullcontext()
    if args.chat or args.image or args.video:
        raise TyllmError("--speculate runs with --prompt on a text tree; drop it for --chat, "
                         "--image and --video.")
    return runtime.load(args.speculate, workers=args.workers)


def speculation(args, draft):
    from tyllm.speculate import DraftModel, Ngram

    if args.speculate is None:
        return None
    if args.speculate == "ngram":
        return Ngram(tokens=args.speculative_tokens)
    return DraftModel(draft, tokens=args.speculative_tokens)


def run_chat(session, args) -> None:
    from tyllm.runtime.chat import chat

    interactive, first = sys.stdin.isatty(), [args.prompt] if args.prompt else []

    def read_line() -> str | None:
        if first:  # --prompt with --chat: the first turn
            return first.pop()
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        return line if line else None

    chat(session, read_line, lambda answer: print(answer, flush=True), args.max_new_tokens,
         args.system)


def generate_multimodal(session, args) -> list[int]:
    from tyllm.runtime.vlm.prompt import multimodal_prompt, open_image, open_video

    if not hasattr(session, "generate_multimodal"):
        raise TyllmError(f"{session.tree.root} is a text-only tree: --image/--video need a tree "
                         f"compiled by scripts/compile_vlm.py.")
    prompt = multimodal_prompt(session.tree.root, args.prompt, len(args.image), len(args.video),
                               chat=not args.raw)
    return session.generate_multimodal(
        prompt, images=[open_image(p) for p in args.image],
        videos=[open_video(v) for v in args.video], max_new_tokens=args.max_new_tokens,
        video_fps=args.video_fps)


def run_verify(args) -> int:
    from tyllm.runtime.tree import Tree
    from tyllm.tools.verify import verify_tree

    checks, backend = verify_tree(args.artifacts), Tree(args.artifacts).backend.name
    for c in checks:
        print(f"{c.label()}: max |{backend} - onnxruntime twin| = {c.max_abs_diff:.3g} "
              f"(relative {c.relative_diff:.3g}) {'ok' if c.ok else 'MISMATCH'}")
    print(f"all files match the manifest; {sum(c.ok for c in checks)}/{len(checks)} graphs agree")
    return 0 if all(c.ok for c in checks) else 1


def run_compare(args) -> int:
    from tyllm.compare.command import run

    return run(args)


def run_doctor(args) -> int:
    from tyllm.tools.doctor import run_doctor as doctor

    findings = doctor(args.artifacts)
    for finding in findings:
        print(finding.line())
    problems = sum(not f.ok for f in findings)
    print(f"{problems} problem(s)" if problems else "all checks passed")
    return 1 if problems else 0


def run_cache(args) -> None:
    from tyllm.compile import program_cache

    root, count, size = program_cache.usage()
    print(f"program cache {root}: {count} programs, {size / 1e6:.1f} MB")
    if args.clear:
        print(f"cleared {program_cache.clear() / 1e6:.1f} MB")


def run_prepare(args) -> None:
    from tyllm.tools.smollm2 import prepare_smollm2

    print(prepare_smollm2(args.out))


def run_eval(args) -> None:
    import json
    from pathlib import Path

    from tyllm.quant.evaluate import evaluate, table

    if args.json and (Path(args.json).is_dir() or not Path(args.json).parent.is_dir()):
        raise TyllmError(f"--json {args.json} must name a file in an existing folder.")
    scores = evaluate(Path(args.model), Path(args.awq) if args.awq else None,
                      Path(args.tree) if args.tree else None, args.rtn_group_size, args.text,
                      args.blocks, args.block_len, api=api_target(args),
                      stride=args.probe_stride)
    print(table(scores))
    if args.json:
        Path(args.json).write_text(json.dumps([s.as_json() for s in scores], indent=1))


def api_target(args):
    if not args.api:
        return None
    from transformers import AutoTokenizer

    from tyllm.quant.api_eval import ApiTarget

    return ApiTarget(args.api, args.api_model or args.model,
                     AutoTokenizer.from_pretrained(args.model), args.api_key)


def run_serve(args) -> int:
    from tyllm.vllm_ext.serve import serve

    rest = args.serve_args
    return serve(rest[1:] if rest[:1] == ["--"] else rest)


COMMANDS = {"compile": run_compile, "run": run_run, "verify": run_verify,
            "doctor": run_doctor, "prepare-smollm2": run_prepare, "serve": run_serve,
            "eval": run_eval, "cache": run_cache, "compare": run_compare}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tyllm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_compile, add_run, add_verify, add_compare, add_doctor, add_cache, add_prepare,
                add_eval, add_serve):
        add(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # everything after `serve` belongs to tyllm's and vLLM's parsers
        argv = ["serve", "--", *argv[1:]]
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except (TyllmError, DieFailure) as e:
        print(f"tyllm: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
