"""The main job: compile SmolLM2-135M-Instruct for 3 emulated dies and answer one prompt."""

import argparse

from tyllm import runtime
from tyllm.build_util import build_and_compile_llm
from tyllm.cache import cache_root
from tyllm.text import decode, encode_prompt
from tyllm.tools.smollm2 import prepare_smollm2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(cache_root() / "SmolLM2-135M-Instruct-AOT/3die"))
    parser.add_argument("--dies", type=int, default=3)
    parser.add_argument("--prompt", default="What is the capital of France?")
    args = parser.parse_args()
    model = prepare_smollm2()
    tree = build_and_compile_llm(model, args.out, max_kv_cache_size=512, seq_len_list=[1, 8],
                                 dev_count=args.dies)
    with runtime.load(tree, workers="processes") as session:
        ids = encode_prompt(session.tree.root, args.prompt)
        answer = decode(session.tree.root, session.generate(ids, max_new_tokens=64))
    print(f"Q: {args.prompt}\nA: {answer}")


if __name__ == "__main__":
    main()
