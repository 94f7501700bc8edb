"""Compile a Qwen2.5-VL / Qwen3-VL checkpoint into a per-die tree: visual/, mrope/, the rope-index
graph and the language model (seed-compatible flags).

    python scripts/compile_vlm.py --model_dir ./Qwen3-VL-4B --num_die 4 --input_height 540 \\
        --input_width 960 --modality image --prefill_lens 96 --max_model_len 8192 \\
        --vm_die_remap 0 1 2 3 --lm_die_remap 0 1 2 3 --source_tokenizer ./tokenizer.json
"""

import argparse
import sys
from pathlib import Path

from tyllm.compile.vlm_request import VlmCompileRequest, parse_sizes
from tyllm.errors import TyllmError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model_dir", required=True, help="HF checkpoint folder of the VLM")
    p.add_argument("--output_dir", default=None,
                   help="where <N>die/ goes (default: <model_dir>-tyllm)")
    p.add_argument("--num_die", type=int, default=1, help="dies of the language model")
    p.add_argument("--input_height", type=int, default=448, help="compiled image height")
    p.add_argument("--input_width", type=int, default=448, help="compiled image width")
    p.add_argument("--image_sizes", default=None,
                   help="several compiled sizes, HxW comma-separated (replaces height/width)")
    p.add_argument("--modality", nargs="+", default=["image"], choices=["image", "video"],
                   help="inputs the tree accepts (video frames use the same vision graphs)")
    p.add_argument("--prefill_lens", type=int, nargs="*", default=[],
                   help="extra prefill graph lengths (1 and 8 are always compiled)")
    p.add_argument("--max_model_len", type=int, default=4096, help="KV cache positions")
    p.add_argument("--kv_windows", type=int, nargs="*", default=None,
                   help="history lengths each language graph is compiled for (default: 256, "
                        "1024, 4096... below --max_model_len; the full length is always built)")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1],
                   help="sequences per language decode call, e.g. 1 4 (1 is always built)")
    p.add_argument("--speculative_tokens", type=int, default=0,
                   help="K: language verify graphs of K+1 rows, for speculative decoding")
    p.add_argument("--vm_die_remap", type=int, nargs="+", default=None,
                   help="physical die of each vision program (its length = vision die count)")
    p.add_argument("--lm_die_remap", type=int, nargs="+", default=None,
                   help="physical die of each language program (a permutation of the dies)")
    p.add_argument("--source_tokenizer", default=None, help="tokenizer.json to ship in the tree")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--threads", type=int, default=0, help="cores per compiled graph (0: all)")
    p.add_argument("--jobs", type=int, default=0,
                   help="worker processes compiling programs in parallel (0: one per core)")
    p.add_argument("--no_onnx", action="store_true", help="skip the language ONNX twins")
    p.add_argument("--no_cache", action="store_true",
                   help="compile every language program anew and keep none (`tyllm cache`)")
    p.add_argument("--backend", default="emulated_cpu",
                   help="the backend to compile for (backends.REGISTRY; default emulated_cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no final line")
    p.add_argument("--verbose", action="store_true",
                   help="show framework output live (otherwise it goes to the tree's compile.log)")
    return p


FLAGS = {"num_die": "--num_die", "image_sizes": "--image_sizes", "modalities": "--modality",
         "prefill_lens": "--prefill_lens", "max_model_len": "--max_model_len",
         "kv_windows": "--kv_windows", "batch_size_list": "--batch_sizes",
         "vm_die_remap": "--vm_die_remap", "lm_die_remap": "--lm_die_remap",
         "source_tokenizer": "--source_tokenizer", "dtype": "--dtype", "num_threads": "--threads",
         "jobs": "--jobs", "backend": "--backend",
         "speculative_tokens": "--speculative_tokens"}  # request field -> flag


def request_from(args) -> VlmCompileRequest:
    model = Path(args.model_dir)
    sizes = (parse_sizes(args.image_sizes) if args.image_sizes
             else ((args.input_height, args.input_width),))
    out = Path(args.output_dir) if args.output_dir else model.parent / f"{model.name}-tyllm"
    return VlmCompileRequest(
        model, out / f"{args.num_die}die", num_die=args.num_die,
        image_sizes=sizes, modalities=tuple(args.modality), prefill_lens=tuple(args.prefill_lens),
        max_model_len=args.max_model_len,
        kv_windows=tuple(args.kv_windows) if args.kv_windows is not None else None,
        batch_size_list=tuple(args.batch_sizes), speculative_tokens=args.speculative_tokens,
        vm_die_remap=tuple(args.vm_die_remap) if args.vm_die_remap else None,
        lm_die_remap=tuple(args.lm_die_remap) if args.lm_die_remap else None,
        source_tokenizer=Path(args.source_tokenizer) if args.source_tokenizer else None,
        dtype=args.dtype, num_threads=args.threads, jobs=args.jobs, backend=args.backend,
        export_onnx=not args.no_onnx, use_cache=not args.no_cache,
        progress=not args.quiet, verbose=args.verbose, options=FLAGS)


def main(argv=None) -> int:
    from tyllm.compile.vlm import compile_vlm

    args = build_parser().parse_args(argv)
    try:
        print(compile_vlm(request_from(args)))
    except TyllmError as e:
        print(f"compile_vlm: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
