"""Convert a quantized checkpoint into what `build_and_compile_llm` reads, or back.

    python scripts/checkpoint_convert.py --src Qwen3-1.7B-AWQ --dst converted --quant_type awq

Reads AutoAWQ GEMM checkpoints (tyllm.quant.save_quantized_model, AutoAWQ, llm-awq) and
compressed-tensors pack-quantized W4A16 ones (llmcompressor) and writes tyllm's int4 layout;
given a checkpoint already in tyllm's layout, writes AutoAWQ GEMM again (vLLM `--quantization
awq`). Tokenizer and processor files are copied; the destination appears only once complete.
"""

import argparse
import sys

from tyllm.errors import TyllmError
from tyllm.quant.convert import QUANT_TYPES, convert_checkpoint


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", required=True, help="quantized checkpoint folder")
    p.add_argument("--dst", required=True, help="new folder for the converted checkpoint")
    p.add_argument("--quant_type", default="awq", help=f"one of {list(QUANT_TYPES)}")
    args = p.parse_args(argv)
    try:
        out = convert_checkpoint(args.src, args.dst, args.quant_type)
    except TyllmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
