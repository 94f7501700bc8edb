"""A torchrun job's script for tests/test_distributed.py: vLLM's LLM(...) on rank 0 over a tree
whose dies are the job's ranks; the other ranks serve their die in follow_rank_0 and leave
there when the engine stops. Rank 0 writes the token ids of PROMPTS (a JSON list of token id
lists, all decoded together) to OUT."""

import json
import sys
from pathlib import Path

from tyllm.runtime.distributed import follow_rank_0


def main(tree: str, prompts_json: str, new_tokens: int, out: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from tyllm.vllm_ext.tree_model import engine_kwargs

    follow_rank_0(tree)
    llm = LLM(**engine_kwargs(Path(tree), workers="distributed"), max_num_seqs=2,
              dtype="float32", gpu_memory_utilization=0.1, enforce_eager=True)
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    prompts = [TokensPrompt(prompt_token_ids=p) for p in json.loads(prompts_json)]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    Path(out).write_text(json.dumps([list(o.outputs[0].token_ids) for o in outputs]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
